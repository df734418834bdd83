"""A study's logged runs, read into table cells: :class:`StudyRuns` indexes the aggregate and
study runs of one ``mlflow.search_runs`` frame (``run_id``, ``tags.<k>``, ``metrics.<k>``,
``params.<k>`` columns, see :mod:`xiqa.schema`) and answers each table entry as a
:class:`~xiqa.report.table.TableCell`: a number with its spread, or the note saying why there is none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.report.table import TableCell


def arch_label(arch: str) -> str:
    """The display label of ``arch`` (the name itself when it has none)."""
    return S.ARCH_LABELS.get(arch, arch)


def ds_label(ds: str) -> str:
    """The display label of dataset ``ds`` (the name itself when it has none)."""
    return S.DATASET_LABELS.get(ds, ds)


def metric_value(row: pd.Series, metric: str) -> float | None:
    """The run's metric ``metric`` as a float; None when it was not logged (or is NaN)."""
    value = row.get(f"metrics.{metric}")
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _missing(row: pd.Series, method: str) -> TableCell:
    """The note of a method without a number: not applicable to this model (issue 26: Guided
    Backprop on a GELU network; the reason in full, "n/a" where short), else not logged."""
    why = tag_value(row, S.not_applicable_tag(method))
    return TableCell(note=why, short_note="n/a") if why else TableCell(note="not logged")


def tag_value(row: pd.Series, tag: str, default: str = "") -> str:
    """The run's tag ``tag``; ``default`` when it was not set."""
    value = row.get(f"tags.{tag}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return str(value)


@dataclass
class StudyRuns:
    """One study's runs, indexed: aggregates by (dataset, arch, condition), study runs by dataset."""

    aggregates: dict[tuple[str, str, str], pd.Series]
    studies: dict[str, pd.Series]
    datasets: list[str]  # grid order
    archs: dict[str, list[str]]  # dataset -> archs, grid order
    methods: list[str]

    @classmethod
    def from_frame(cls, runs: pd.DataFrame) -> StudyRuns:
        """Index a study's runs (``mlflow.search_runs`` frame): aggregates and study runs."""
        if runs.empty:
            raise XiqaError("the tracking store holds no aggregate runs for this study: run `dvc repro` first")
        kinds = runs.get(f"tags.{S.KIND}")
        if kinds is None:
            raise XiqaError("the runs carry no xiqa.kind tag; they were not logged by the report stage")
        aggs = runs[kinds == "aggregate"].copy()
        if aggs.empty:
            raise XiqaError("the study has no aggregate runs: run `dvc repro` (the report stage) first")
        aggs["_order"] = pd.to_numeric(aggs.get("tags.grid_index"), errors="coerce").fillna(0)
        aggs = aggs.sort_values("_order", kind="stable")
        aggregates: dict[tuple[str, str, str], pd.Series] = {}
        datasets: list[str] = []
        archs: dict[str, list[str]] = {}
        for _, row in aggs.iterrows():
            ds, arch, cond = tag_value(row, "dataset"), tag_value(row, "arch"), tag_value(row, "condition")
            aggregates[(ds, arch, cond)] = row
            if ds not in datasets:
                datasets.append(ds)
            if arch not in archs.setdefault(ds, []):
                archs[ds].append(arch)
        studies = {tag_value(r, "dataset"): r for _, r in runs[kinds == "study"].iterrows()}
        listed = [m for m in tag_value(aggs.iloc[0], "methods").split(",") if m]
        methods = [m for m in S.METHODS if m in listed] + [m for m in listed if m not in S.METHODS]
        return cls(aggregates, studies, datasets, archs, methods or list(S.METHODS))

    def pg_cell(self, ds: str, arch: str, cond: str, method: str, smoothed: bool = True) -> TableCell:
        """The Pointing Game cell of ``method`` for one model (mean ± std over seeds, bootstrap CI)."""
        row, note = self.logged(ds, arch, cond)
        if row is None:
            return note or TableCell()
        mean = metric_value(row, S.agg_metric("mean", method, smoothed))
        if mean is None:
            return _missing(row, method)
        return TableCell(mean=mean, std=metric_value(row, S.agg_metric("std", method, smoothed)),
                    ci_low=metric_value(row, S.agg_metric("ci_low", method, smoothed)),
                    ci_high=metric_value(row, S.agg_metric("ci_high", method, smoothed)))

    def logged(self, ds: str, arch: str, cond: str) -> tuple[pd.Series | None, TableCell | None]:
        """The aggregate run, or the note to show instead of its numbers."""
        row = self.aggregates.get((ds, arch, cond))
        if row is None:
            return None, TableCell(note="not in the grid")
        if tag_value(row, S.STATUS) == "skipped":
            reason = tag_value(row, S.REASON, "no reason logged")
            # the displayed cell stays empty: the column's label and one table note say why
            return None, TableCell(note=f"skipped: {reason}", short_note="–")
        return row, None

    def baseline_cell(self, ds: str, arch: str, cond: str, baseline: str) -> TableCell:
        """A no-information baseline on the images that ``(ds, arch, cond)`` was scored on: the
        value and its bootstrap interval (no std: it does not depend on the model or seed)."""
        row, note = self.logged(ds, arch, cond)
        if row is None:
            return note or TableCell()
        mean = metric_value(row, S.agg_baseline_metric("mean", baseline))
        if mean is None:
            return TableCell(note="not logged")
        return TableCell(mean=mean, ci_low=metric_value(row, S.agg_baseline_metric("ci_low", baseline)),
                    ci_high=metric_value(row, S.agg_baseline_metric("ci_high", baseline)))

    def loc_cell(self, ds: str, arch: str, cond: str, metric: str, method: str, smoothed: bool = True) -> TableCell:
        """A localisation metric of ``method``: mean ± std over seeds [bootstrap CI]."""
        row, note = self.logged(ds, arch, cond)
        if row is None:
            return note or TableCell()
        mean = metric_value(row, S.loc_agg_metric(metric, "mean", method, smoothed))
        if mean is None and tag_value(row, S.not_applicable_tag(method)):
            return _missing(row, method)
        if mean is None:
            return TableCell(note="constant maps" if (metric_value(row, "constant_maps") or 0) > 0 else "not logged")
        return TableCell(mean=mean, std=metric_value(row, S.loc_agg_metric(metric, "std", method, smoothed)),
                    ci_low=metric_value(row, S.loc_agg_metric(metric, "ci_low", method, smoothed)),
                    ci_high=metric_value(row, S.loc_agg_metric(metric, "ci_high", method, smoothed)))

    def loc_baseline_cell(self, ds: str, arch: str, cond: str, metric: str, baseline: str) -> TableCell:
        """A localisation baseline on the images ``(ds, arch, cond)`` was scored on (no std)."""
        row, note = self.logged(ds, arch, cond)
        if row is None:
            return note or TableCell()
        mean = metric_value(row, S.loc_agg_baseline_metric(metric, "mean", baseline))
        if mean is None:
            return TableCell(note="not logged")
        return TableCell(mean=mean, ci_low=metric_value(row, S.loc_agg_baseline_metric(metric, "ci_low", baseline)),
                    ci_high=metric_value(row, S.loc_agg_baseline_metric(metric, "ci_high", baseline)))

    def tau_cell(self, ds: str, arch: str, cond: str) -> TableCell:
        """The τ (input pixels) the model's evaluations used."""
        row, note = self.logged(ds, arch, cond)
        if row is None:
            return note or TableCell()
        tau = metric_value(row, S.TAU)
        return TableCell(mean=tau, digits=2) if tau is not None else TableCell(note="not logged")

    def tau_note(self, ds: str) -> str:
        """One sentence: τ in input pixels on ``ds`` and how it follows from the paper's τ."""
        for (d, _, _), row in self.aggregates.items():
            tau = metric_value(row, S.TAU) if d == ds else None
            if tau is None:
                continue
            tol, at, size = (row.get(f"params.{k}") for k in ("tolerance", "tolerance_at", "image_size"))
            how = (f" ({float(tol):g} px at an input of {at} px, scaled to the study's {size} px input)"
                   if all(isinstance(v, str) and v for v in (tol, at, size)) else "")
            return f"Pointing Game τ on {ds_label(ds)}: {tau:g} input pixels{how}; a hit is a peak at distance < τ."
        return f"Pointing Game τ on {ds_label(ds)}: not logged (rerun the evaluate and report stages)."

    def smoothing_note(self) -> str:
        """The Gaussian smoothing the aggregates were evaluated with: their logged parameters,
        σ quoted as logged (``1.0``, as in params.yaml)."""
        for row in self.aggregates.values():
            sigma, kernel = row.get("params.smooth_sigma"), row.get("params.smooth_kernel")
            if isinstance(sigma, str) and isinstance(kernel, str) and sigma and kernel:
                k = int(float(kernel))
                return f"Smoothing: Gaussian σ = {sigma}, {k}×{k} kernel, reflect padding."
        return "Smoothing: Gaussian, reflect padding (σ and kernel not logged: rerun the report stage)."

