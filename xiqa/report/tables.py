"""The paper's Tables 2–7 and xiqa's Tables 8 (localisation beyond the Pointing Game) and 9
(sanity checks), built from the study's logged MLflow runs (never from models).

Input is a runs DataFrame in the shape ``mlflow.search_runs`` returns (``run_id``,
``tags.<k>``, ``metrics.<k>`` columns), holding one study's aggregate and study runs (see
:mod:`xiqa.schema`). :func:`build_tables` turns it into :class:`Table` objects — methods
as rows, conditions as columns — and :func:`write_tables` renders each as Markdown, CSV, LaTeX
and HTML. Accuracies are means ± sample standard deviations (ddof = 1) over seeds, with the 95 %
bootstrap interval over test images in brackets. Tables 2–6 end with the no-information
baselines (rows "chance (uniform peak)" and "centre peak": value and bootstrap interval, no std
since they do not depend on the model) and a row stating τ in input pixels, which a note also
derives from the paper's τ.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.io import write_text

FORMAT_SUFFIX = {"md": ".md", "csv": ".csv", "latex": ".tex", "html": ".html"}
STD_NOTE = "mean ± std over seeds (std: sample standard deviation, ddof = 1); [95 % bootstrap CI over test images]"


@dataclass(frozen=True)
class Cell:
    """One table entry: a number with its spread, or a note (e.g. why a condition was skipped)."""

    mean: float | None = None
    std: float | None = None  # None: a single seed (ddof = 1 undefined)
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    note: str | None = None  # whole, as the CSV carries it
    short_note: str | None = None  # what md / LaTeX / HTML show instead of a long note
    digits: int | None = None  # display digits when not the table's default

    def text(self, digits: int = 3) -> str:
        """The cell as displayed: ``mean ± std`` (or the note) with ``digits`` decimals."""
        if self.mean is None:
            return self.short_note or self.note or "–"
        digits = self.digits or digits
        out = f"{self.mean:.{digits}f}"
        if self.std is not None:
            out += f" ± {self.std:.{digits}f}"
        if self.ci_low is not None and self.ci_high is not None:
            out += f" [{self.ci_low:.{digits - 1}f}, {self.ci_high:.{digits - 1}f}]"
        if self.p_value is not None:
            out += f" (p = {self.p_value:.2f})"
        return out


@dataclass(frozen=True)
class ColumnKey:
    """Where a column's numbers live in MLflow, which names its CSV columns: ``run`` the run's
    coordinates (``<ds>/<arch>/<condition>`` of an aggregate run, ``<ds>/<archA>~<archB>`` of a
    study run's architecture pair, "" when the rows are the runs, Table 7) and ``metric`` the
    stem of the metric key. The CSV column of statistic ``stat`` is ``<run>/<metric>_<stat>``,
    and its value at row ``<id>`` is the metric ``<metric>_<stat>/<id>`` of that run (e.g.
    ``objectcxr/resnet34/fr/pg_mean`` at row ``gradcam`` = ``pg_mean/gradcam`` of the FR
    aggregate run). ``whole``: the value is the metric ``<metric>/<id>`` itself (``dom``,
    ``mmd``; its p-value ``mmd_p``)."""

    run: str
    metric: str
    whole: bool = False

    def name(self, stat: str) -> str:
        """The CSV column of ``stat`` (mean, std, ci_low, ci_high, p or note)."""
        key = self.metric if self.whole and stat == "mean" else f"{self.metric}_{stat}"
        return f"{self.run}/{key}" if self.run else key


@dataclass
class Table:
    """One report table: an id, a title, rows of cells by column, notes; exported to every format."""

    key: str  # file stem, e.g. "table4-objectcxr"
    title: str
    row_header: str  # "method" or "model": the CSV's id column
    rows: list[str]  # display labels
    columns: list[str]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # row label -> stable id (as in the metric keys)
    keys: dict[str, ColumnKey] = field(default_factory=dict)  # column -> its runs and metric (CSV names)

    def add_column(self, column: str, key: ColumnKey) -> str:
        """Append ``column``, whose numbers are ``key``'s metric; returns ``column``."""
        self.columns.append(column)
        self.keys[column] = key
        return column

    def cell(self, row: str, column: str) -> Cell:
        """The cell at ``row`` × ``column`` (an empty cell when absent)."""
        return self.cells.get((row, column), Cell())

    def text_frame(self) -> pd.DataFrame:
        """The table as displayed: one string per cell, methods as the index."""
        data = {c: [self.cell(r, c).text() for r in self.rows] for c in self.columns}
        return pd.DataFrame(data, index=pd.Index(self.rows, name=self.row_header))

    def numeric_frame(self) -> pd.DataFrame:
        """Machine-readable: indexed by the row's stable id (``row_header``: a method name as in
        the metric keys ``pg_mean/<method>``, ``baseline_<b>``, ``tau_px``; or ``<ds>-<arch>``),
        then ``label`` (the display label), then per column the statistics named as the metric
        keys they come from (:class:`ColumnKey`): ``<run>/<metric>_mean``, ``_std`` and, when
        present, ``_ci_low``, ``_ci_high``, ``_p`` and ``_note`` (whole, never cut). The
        baseline rows hold the same run's ``baseline_<stat>/<b>`` and the τ row its ``tau_px``."""
        data: dict[str, list] = {"label": list(self.rows)}
        for c in self.columns:
            if c not in self.keys:  # a bug in a table builder, not a user error
                raise ValueError(f"{self.key}: column {c!r} has no metric key")
            name = self.keys[c].name
            cells = [self.cell(r, c) for r in self.rows]
            data[name("mean")] = [x.mean for x in cells]
            if any(x.std is not None for x in cells) or any(x.mean is not None for x in cells):
                data[name("std")] = [x.std for x in cells]
            if any(x.ci_low is not None for x in cells):
                data[name("ci_low")] = [x.ci_low for x in cells]
                data[name("ci_high")] = [x.ci_high for x in cells]
            if any(x.p_value is not None for x in cells):
                data[name("p")] = [x.p_value for x in cells]
            if any(x.note for x in cells):
                data[name("note")] = [x.note or "" for x in cells]
        names = [self.keys[c].name("mean") for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.key}: two columns share a metric key: {names}")
        missing = [r for r in self.rows if r not in self.ids]
        if missing:
            raise ValueError(f"{self.key}: rows without an id: {missing}")
        return pd.DataFrame(data, index=pd.Index([self.ids[r] for r in self.rows], name=self.row_header))


# --------------------------------------------------------------------------- reading runs
def _num(row: pd.Series, metric: str) -> float | None:
    value = row.get(f"metrics.{metric}")
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _missing(row: pd.Series, method: str) -> Cell:
    """The note of a method without a number: not applicable to this model (issue 26: Guided
    Backprop on a GELU network; the reason in full, "n/a" where short), else not logged."""
    why = _tag(row, S.not_applicable_tag(method))
    return Cell(note=why, short_note="n/a") if why else Cell(note="not logged")


def _tag(row: pd.Series, tag: str, default: str = "") -> str:
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
            ds, arch, cond = _tag(row, "dataset"), _tag(row, "arch"), _tag(row, "condition")
            aggregates[(ds, arch, cond)] = row
            if ds not in datasets:
                datasets.append(ds)
            if arch not in archs.setdefault(ds, []):
                archs[ds].append(arch)
        studies = {_tag(r, "dataset"): r for _, r in runs[kinds == "study"].iterrows()}
        listed = [m for m in _tag(aggs.iloc[0], "methods").split(",") if m]
        methods = [m for m in S.METHODS if m in listed] + [m for m in listed if m not in S.METHODS]
        return cls(aggregates, studies, datasets, archs, methods or list(S.METHODS))

    def pg_cell(self, ds: str, arch: str, cond: str, method: str, smoothed: bool = True) -> Cell:
        """The Pointing Game cell of ``method`` for one model (mean ± std over seeds, bootstrap CI)."""
        row, note = self._logged(ds, arch, cond)
        if row is None:
            return note or Cell()
        mean = _num(row, S.agg_metric("mean", method, smoothed))
        if mean is None:
            return _missing(row, method)
        return Cell(mean=mean, std=_num(row, S.agg_metric("std", method, smoothed)),
                    ci_low=_num(row, S.agg_metric("ci_low", method, smoothed)),
                    ci_high=_num(row, S.agg_metric("ci_high", method, smoothed)))

    def _logged(self, ds: str, arch: str, cond: str) -> tuple[pd.Series | None, Cell | None]:
        """The aggregate run, or the note to show instead of its numbers."""
        row = self.aggregates.get((ds, arch, cond))
        if row is None:
            return None, Cell(note="not in the grid")
        if _tag(row, S.STATUS) == "skipped":
            reason = _tag(row, S.REASON, "no reason logged")
            # the displayed cell stays empty: the column's label and one table note say why
            return None, Cell(note=f"skipped: {reason}", short_note="–")
        return row, None

    def baseline_cell(self, ds: str, arch: str, cond: str, baseline: str) -> Cell:
        """A no-information baseline on the images that ``(ds, arch, cond)`` was scored on: the
        value and its bootstrap interval (no std: it does not depend on the model or seed)."""
        row, note = self._logged(ds, arch, cond)
        if row is None:
            return note or Cell()
        mean = _num(row, S.agg_baseline_metric("mean", baseline))
        if mean is None:
            return Cell(note="not logged")
        return Cell(mean=mean, ci_low=_num(row, S.agg_baseline_metric("ci_low", baseline)),
                    ci_high=_num(row, S.agg_baseline_metric("ci_high", baseline)))

    def loc_cell(self, ds: str, arch: str, cond: str, metric: str, method: str, smoothed: bool = True) -> Cell:
        """A localisation metric of ``method``: mean ± std over seeds [bootstrap CI]."""
        row, note = self._logged(ds, arch, cond)
        if row is None:
            return note or Cell()
        mean = _num(row, S.loc_agg_metric(metric, "mean", method, smoothed))
        if mean is None and _tag(row, S.not_applicable_tag(method)):
            return _missing(row, method)
        if mean is None:
            return Cell(note="constant maps" if (_num(row, "constant_maps") or 0) > 0 else "not logged")
        return Cell(mean=mean, std=_num(row, S.loc_agg_metric(metric, "std", method, smoothed)),
                    ci_low=_num(row, S.loc_agg_metric(metric, "ci_low", method, smoothed)),
                    ci_high=_num(row, S.loc_agg_metric(metric, "ci_high", method, smoothed)))

    def loc_baseline_cell(self, ds: str, arch: str, cond: str, metric: str, baseline: str) -> Cell:
        """A localisation baseline on the images ``(ds, arch, cond)`` was scored on (no std)."""
        row, note = self._logged(ds, arch, cond)
        if row is None:
            return note or Cell()
        mean = _num(row, S.loc_agg_baseline_metric(metric, "mean", baseline))
        if mean is None:
            return Cell(note="not logged")
        return Cell(mean=mean, ci_low=_num(row, S.loc_agg_baseline_metric(metric, "ci_low", baseline)),
                    ci_high=_num(row, S.loc_agg_baseline_metric(metric, "ci_high", baseline)))

    def tau_cell(self, ds: str, arch: str, cond: str) -> Cell:
        """The τ (input pixels) the model's evaluations used."""
        row, note = self._logged(ds, arch, cond)
        if row is None:
            return note or Cell()
        tau = _num(row, S.TAU)
        return Cell(mean=tau, digits=2) if tau is not None else Cell(note="not logged")

    def tau_note(self, ds: str) -> str:
        """One sentence: τ in input pixels on ``ds`` and how it follows from the paper's τ."""
        for (d, _, _), row in self.aggregates.items():
            tau = _num(row, S.TAU) if d == ds else None
            if tau is None:
                continue
            tol, at, size = (row.get(f"params.{k}") for k in ("tolerance", "tolerance_at", "image_size"))
            how = (f" ({float(tol):g} px at an input of {at} px, scaled to the study's {size} px input)"
                   if all(isinstance(v, str) and v for v in (tol, at, size)) else "")
            return f"Pointing Game τ on {_ds_label(ds)}: {tau:g} input pixels{how}; a hit is a peak at distance < τ."
        return f"Pointing Game τ on {_ds_label(ds)}: not logged (rerun the evaluate and report stages)."

    def smoothing_note(self) -> str:
        """The Gaussian smoothing the aggregates were evaluated with: their logged parameters,
        σ quoted as logged (``1.0``, as in params.yaml)."""
        for row in self.aggregates.values():
            sigma, kernel = row.get("params.smooth_sigma"), row.get("params.smooth_kernel")
            if isinstance(sigma, str) and isinstance(kernel, str) and sigma and kernel:
                k = int(float(kernel))
                return f"Smoothing: Gaussian σ = {sigma}, {k}×{k} kernel, reflect padding."
        return "Smoothing: Gaussian, reflect padding (σ and kernel not logged: rerun the report stage)."


def condition_label(study: StudyRuns, ds: str, arch: str, cond: str) -> str:
    """A condition's column label: ``SR (stand-in pretraining)`` when its backbone did not
    start from ImageNet, ``… (skipped)`` when it has no numbers (a table note says why)."""
    label = S.CONDITION_LABELS.get(cond, cond)
    row = study.aggregates.get((ds, arch, cond))
    if row is None or _tag(row, S.STATUS) == "skipped":
        return f"{label} (skipped)"
    if cond == "sr" and any(s != "imagenet" for s in _tag(row, "start").split(",") if s):
        return f"{label} (stand-in pretraining)"
    return label


def start_notes(study: StudyRuns, ds: str) -> list[str]:
    """One note per architecture naming where its trained and SR backbones started (SPEC 3)."""
    notes = []
    for arch in study.archs.get(ds, []):
        starts = {cond: _tag(row, "start") for cond in ("trained", "sr")
                  if (row := study.aggregates.get((ds, arch, cond))) is not None and _tag(row, "start")}
        if starts:
            said = "; ".join(f"{S.CONDITION_LABELS[c]}: {v.replace(',', ', ')}" for c, v in starts.items())
            notes.append(f"Start of {_arch_label(arch)}'s backbone — {said} (imagenet: ImageNet weights; "
                         "stand-in:<run>: the pretrain stage's MLflow run, no ImageNet weights offline; "
                         "scratch: random).")
    return notes


def short_reason(reason: str, limit: int = 60) -> str:
    """The first clause of a skip reason, for the displayed tables (the table note and the CSV
    carry the whole sentence)."""
    head = reason.split(":")[0].strip()
    return head if len(head) <= limit else head[: limit - 1] + "…"


def _skip_notes(study: StudyRuns, ds: str | None = None) -> list[str]:
    notes = []
    for (d, arch, cond), row in study.aggregates.items():
        if (ds is None or d == ds) and _tag(row, S.STATUS) == "skipped":
            notes.append(f"{S.CONDITION_LABELS.get(cond, cond)} {_arch_label(arch)} skipped: {_tag(row, S.REASON)}")
    return list(dict.fromkeys(notes))


def _arch_label(arch: str) -> str:
    return S.ARCH_LABELS.get(arch, arch)


def _ds_label(ds: str) -> str:
    return S.DATASET_LABELS.get(ds, ds)


def _method_rows(study: StudyRuns) -> tuple[list[str], dict[str, str]]:
    labels = {m: S.method_label(m) for m in study.methods}
    return [labels[m] for m in study.methods], labels


def _method_ids(t: Table, study: StudyRuns) -> Table:
    """``t`` with its method rows' ids: the method names of the metric keys."""
    t.ids.update({S.method_label(m): m for m in study.methods})
    return t


BASELINE_NOTE = ("No-information baselines: chance (uniform peak) = the exact expected accuracy of a peak drawn "
                 "uniformly over the input pixels; centre peak = the accuracy of a peak at the centre pixel "
                 "((W − 1) // 2, (H − 1) // 2). They depend only on the test boxes and τ, not on the model, "
                 "so they have no std over seeds; [95 % bootstrap CI over test images].")


def _add_baselines_and_tau(t: Table, study: StudyRuns, columns: list[tuple[str, str, str, str]]) -> None:
    """Append the baseline rows and the τ row to a Pointing Game table, for its accuracy
    columns ``(column, dataset, arch, condition)``, and the notes that explain them."""
    rows = [S.BASELINE_LABELS[b] for b in S.BASELINES] + [S.TAU_LABEL]
    t.rows += rows
    t.ids |= {S.BASELINE_LABELS[b]: f"baseline_{b}" for b in S.BASELINES} | {S.TAU_LABEL: S.TAU}
    for col, ds, arch, cond in columns:
        for b in S.BASELINES:
            t.cells[(S.BASELINE_LABELS[b], col)] = study.baseline_cell(ds, arch, cond, b)
        t.cells[(S.TAU_LABEL, col)] = study.tau_cell(ds, arch, cond)
    t.notes.append(BASELINE_NOTE)
    t.notes += [study.tau_note(ds) for ds in dict.fromkeys(ds for _, ds, _, _ in columns)]


# --------------------------------------------------------------------------- the tables
RANDOMISATION_TABLE = {"lvot": 3, "objectcxr": 4}
ARCHITECTURE_TABLE = {"lvot": 5, "objectcxr": 6}


def smoothing_table(study: StudyRuns) -> Table:
    """Table 2: trained models' Pointing Game accuracy with smoothing off and on."""
    rows, labels = _method_rows(study)
    t = _method_ids(Table("table2", "Table 2 — Pointing Game accuracy of the trained models, smoothing off / on",
              "method", rows, [], notes=[STD_NOTE, study.smoothing_note()]), study)
    spec = []
    for ds in study.datasets:
        for arch in study.archs[ds]:
            for smoothed in (False, True):
                col = t.add_column(f"{_ds_label(ds)} {_arch_label(arch)} · smoothing {'on' if smoothed else 'off'}",
                                   ColumnKey(f"{ds}/{arch}/trained", "pg" if smoothed else "pg_raw"))
                spec.append((col, ds, arch, "trained"))
                for m in study.methods:
                    t.cells[(labels[m], col)] = study.pg_cell(ds, arch, "trained", m, smoothed)
    _add_baselines_and_tau(t, study, spec)
    return t


def randomisation_table(study: StudyRuns, ds: str) -> Table:
    """Tables 3 (LVOT) and 4 (Object-CXR): SR / FR / trained, mean ± std over seeds."""
    rows, labels = _method_rows(study)
    n = RANDOMISATION_TABLE.get(ds, 3)
    t = _method_ids(Table(f"table{n}-{ds}", f"Table {n} — Pointing Game accuracy on {_ds_label(ds)}: semi-randomised "
                          "(SR), fully randomised (FR) and trained models", "method", rows, [],
                          notes=[STD_NOTE, "Smoothed maps."]), study)
    archs = study.archs[ds]
    spec = []
    for arch in archs:
        for cond in S.CONDITIONS:
            label = condition_label(study, ds, arch, cond)
            col = t.add_column(label if len(archs) == 1 else f"{_arch_label(arch)} · {label}",
                               ColumnKey(f"{ds}/{arch}/{cond}", "pg"))
            spec.append((col, ds, arch, cond))
            for m in study.methods:
                t.cells[(labels[m], col)] = study.pg_cell(ds, arch, cond, m)
    _add_baselines_and_tau(t, study, spec)
    t.notes += _skip_notes(study, ds) + start_notes(study, ds)
    return t


DOM_NOTE = ("DoM = |mean(A) − mean(B)| over per-seed accuracies (the linear-kernel MMD); MMD: RBF kernel on "
            "the same per-seed accuracies, median-heuristic bandwidth, permutation p-value.")


def architecture_table(study: StudyRuns, ds: str) -> Table:
    """Tables 5 (LVOT) and 6 (Object-CXR): trained means per architecture, DoM and RBF-MMD."""
    rows, labels = _method_rows(study)
    n = ARCHITECTURE_TABLE.get(ds, 5)
    t = _method_ids(Table(f"table{n}-{ds}", f"Table {n} — Pointing Game accuracy of trained models on "
                          f"{_ds_label(ds)} per architecture, and their Difference of Means (DoM)", "method", rows, [],
                          notes=[STD_NOTE, DOM_NOTE]), study)
    archs = study.archs[ds]
    for arch in archs:
        col = t.add_column(_arch_label(arch), ColumnKey(f"{ds}/{arch}/trained", "pg"))
        for m in study.methods:
            t.cells[(labels[m], col)] = study.pg_cell(ds, arch, "trained", m)
    _add_baselines_and_tau(t, study, [(_arch_label(a), ds, a, "trained") for a in archs])
    run = study.studies.get(ds)
    pairs = [(a, b) for i, a in enumerate(archs) for b in archs[i + 1:]]
    for a, b in pairs:
        tail = "" if len(pairs) == 1 else f" {_arch_label(a)} vs {_arch_label(b)}"
        sfx = S.pair_suffix(a, b, len(archs))
        dom_col = t.add_column(f"DoM{tail}", ColumnKey(f"{ds}/{a}~{b}", "dom", whole=True))
        mmd_col = t.add_column(f"MMD (RBF){tail}", ColumnKey(f"{ds}/{a}~{b}", "mmd", whole=True))
        for m in study.methods:
            if run is None:
                t.cells[(labels[m], dom_col)] = t.cells[(labels[m], mmd_col)] = Cell(note="no study run")
                continue
            dom = _num(run, f"dom/{m}{sfx}")
            t.cells[(labels[m], dom_col)] = Cell(mean=dom) if dom is not None else Cell(note="not logged")
            mmd = _num(run, f"mmd/{m}{sfx}")
            t.cells[(labels[m], mmd_col)] = (Cell(mean=mmd, p_value=_num(run, f"mmd_p/{m}{sfx}"))
                                             if mmd is not None else Cell(note="not logged"))
    if len(archs) < 2:
        t.notes.append("Only one architecture in the grid: no DoM.")
    return t


LOCALISATION_NOTE = (
    "Localisation metrics on the boxes as a binary mask at input size (Quantus' definitions, "
    "xiqa.evaluation.localisation): mass = the map's mass inside the mask / its total (energy-based "
    "pointing game); rank = the fraction of the |mask| highest pixels inside the mask; AUC = ROC AUC of "
    "the map values as scores for pixel-in-mask (0.5: no information); top-k = the fraction of the top-k "
    "pixels inside the mask, k a fixed fraction of the image. Smoothed maps; a constant map has no value "
    "and is left out (counted as a constant map).")
LOC_BASELINE_NOTE = ("No-information baselines: uniform map = a constant map, its ties broken by expectation "
                     "(mass = rank = top-k = box area / image area up to the top-k cap, AUC = 0.5); centre "
                     "Gaussian map = a Gaussian at the image centre with σ = a fixed fraction of the side. They "
                     "depend only on the boxes, not on the model: no std over seeds; "
                     "[95 % bootstrap CI over test images].")


def localisation_table(study: StudyRuns, ds: str) -> Table:
    """Table 8 (one per dataset): mass, rank, AUC and top-k per method, architecture and
    condition, mean ± std over seeds [bootstrap CI], with the uniform and centre-Gaussian maps."""
    rows, labels = _method_rows(study)
    t = _method_ids(Table(f"table8-{ds}", f"Table 8 — localisation beyond the Pointing Game on {_ds_label(ds)}: "
                          "relevance mass, relevance rank, AUC and top-k intersection", "method", rows, [],
                          notes=[STD_NOTE, LOCALISATION_NOTE, LOC_BASELINE_NOTE]), study)
    archs = study.archs[ds]
    base_rows = [S.LOC_BASELINE_LABELS[b] for b in S.LOC_BASELINES]
    t.rows += base_rows
    t.ids |= {S.LOC_BASELINE_LABELS[b]: f"baseline_{b}" for b in S.LOC_BASELINES}
    for arch in archs:
        for cond in S.CONDITIONS:
            if study._logged(ds, arch, cond)[0] is None:
                continue  # skipped or not in the grid: four columns of the same note say nothing (see notes)
            for k in S.LOC_METRICS:
                label = condition_label(study, ds, arch, cond)
                head = label if len(archs) == 1 else f"{_arch_label(arch)} · {label}"
                col = t.add_column(f"{head} · {S.LOC_METRIC_LABELS[k]}", ColumnKey(f"{ds}/{arch}/{cond}", k))
                for m in study.methods:
                    t.cells[(labels[m], col)] = study.loc_cell(ds, arch, cond, k, m)
                for b in S.LOC_BASELINES:
                    t.cells[(S.LOC_BASELINE_LABELS[b], col)] = study.loc_baseline_cell(ds, arch, cond, k, b)
    t.notes += _skip_notes(study, ds) + start_notes(study, ds)
    return t


SANITY_NOTES = (
    ("mean ± std over the trained seeds (std: ddof = 1), each seed the mean over the stage's sample of test "
     "images; pairs with a constant map are left out."),
    ("MPRT (Adebayo et al. 2018): the model's blocks re-initialised cumulatively from the logits down to the "
     "stem; similarity of each map (explain's maps, not smoothed) to the trained model's map of the same "
     "image and class. A method that "
     "depends on the learned weights falls towards 0. Random logit: SSIM of the maps for the predicted and "
     "the other class (low: class-sensitive)."),
)


def sanity_table(study: StudyRuns, ds: str) -> Table:
    """Table 9 (one per dataset): per method and architecture, the MPRT similarity to the trained
    maps after full randomisation (Spearman of |maps|, SSIM) and the random-logit SSIM, mean ±
    std over the trained seeds; a note lists, from these numbers, the methods whose mean
    Spearman stays above :data:`xiqa.schema.MPRT_PASS_THRESHOLD` (they fail the MPRT)."""
    rows, labels = _method_rows(study)
    t = _method_ids(Table(f"table9-{ds}", f"Table 9 — sanity checks on {_ds_label(ds)}: similarity to the trained "
                          "maps after full randomisation (MPRT) and between the two classes' maps (random logit)",
                          "method", rows, [], notes=list(SANITY_NOTES)), study)
    fails: dict[str, list[str]] = {}
    logged = False
    for arch in study.archs[ds]:
        row, note = study._logged(ds, arch, "trained")
        ran = row is not None and any(_num(row, S.sanity_metric(st, "mean", m)) is not None
                                      for st in S.SANITY_STATS for m in study.methods)
        for stat in S.SANITY_STATS:
            col = t.add_column(S.SANITY_STAT_LABELS[stat] if len(study.archs[ds]) == 1
                               else f"{_arch_label(arch)} · {S.SANITY_STAT_LABELS[stat]}",
                               ColumnKey(f"{ds}/{arch}/trained", stat))
            for m in study.methods:
                mean = None if row is None else _num(row, S.sanity_metric(stat, "mean", m))
                if mean is None:
                    t.cells[(labels[m], col)] = note or Cell(note="constant maps" if ran else "not run")
                    continue
                logged = True
                t.cells[(labels[m], col)] = Cell(mean=mean, std=_num(row, S.sanity_metric(stat, "std", m)))
                if stat == "mprt_spearman_final" and mean > S.MPRT_PASS_THRESHOLD:
                    fails.setdefault(arch, []).append(labels[m])
    if not logged:
        t.notes.append("No sanity results: run `dvc repro sanity` (then the report).")
        return t
    for arch in study.archs[ds]:
        failing = ", ".join(fails.get(arch, [])) or "none"
        t.notes.append(f"{_arch_label(arch)}: methods whose mean Spearman after full randomisation stays above "
                       f"{S.MPRT_PASS_THRESHOLD:g} (fail the MPRT): {failing}.")
    return t


def classification_table(study: StudyRuns) -> Table:
    """Table 7: test accuracy and ROC AUC of the trained models, mean ± std over seeds."""
    t = Table("table7", "Table 7 — Classification accuracy and ROC AUC of the trained models (test split)",
              "model", [], [], notes=["mean ± std over seeds (std: sample standard deviation, ddof = 1)."])
    for col, name in (("Accuracy", "test_accuracy"), ("AUC", "test_auc")):
        t.add_column(col, ColumnKey("", name))
    for ds in study.datasets:
        for arch in study.archs[ds]:
            row_label = f"{_ds_label(ds)} {_arch_label(arch)}"
            t.rows.append(row_label)
            t.ids[row_label] = f"{ds}-{arch}"
            row = study.aggregates.get((ds, arch, "trained"))
            for col, name in (("Accuracy", "test_accuracy"), ("AUC", "test_auc")):
                mean = None if row is None else _num(row, f"{name}_mean")
                t.cells[(row_label, col)] = (Cell(mean=mean, std=_num(row, f"{name}_std"))
                                             if mean is not None else Cell(note="not logged"))
        t.notes += start_notes(study, ds)
    return t


def build_tables(runs: pd.DataFrame) -> list[Table]:
    """Every table of the study held in ``runs`` (one study's aggregate + study runs)."""
    study = StudyRuns.from_frame(runs)
    tables = [smoothing_table(study)]
    order = sorted(study.datasets, key=lambda d: RANDOMISATION_TABLE.get(d, 99))
    tables += [randomisation_table(study, ds) for ds in order]
    tables += [architecture_table(study, ds) for ds in order]
    tables.append(classification_table(study))
    tables += [localisation_table(study, ds) for ds in order]
    tables += [sanity_table(study, ds) for ds in order]
    return tables


# --------------------------------------------------------------------------- rendering
def to_markdown(t: Table) -> str:
    """``t`` as a Markdown table with its title and notes."""
    frame = t.text_frame()
    head = [t.row_header, *t.columns]
    lines = [f"### {t.title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + ["---:"] * len(t.columns)) + "|"]
    for label, values in frame.iterrows():
        cells = [str(label), *[str(v) for v in values]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += [""] + [f"_{n}_" for n in t.notes]
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    """``t`` as CSV for machines: the row id, its label, then every statistic, nothing cut."""
    return t.numeric_frame().to_csv()


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                  "±": r"$\pm$", "×": r"$\times$", "σ": r"$\sigma$", "−": "-", "—": "--",
                  "–": "--", "·": r"$\cdot$", "τ": r"$\tau$", "<": r"$<$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped and Unicode symbols as math."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(t: Table) -> str:
    """``t`` as a LaTeX ``tabular`` with its caption and notes."""
    frame = t.text_frame()
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(t.title)}}}",
             rf"\label{{tab:{t.key}}}", r"\begin{tabular}{l" + "r" * len(t.columns) + "}", r"\hline",
             " & ".join(latex_escape(h) for h in [t.row_header, *t.columns]) + r" \\", r"\hline"]
    for label, values in frame.iterrows():
        lines.append(" & ".join(latex_escape(str(c)) for c in [label, *values]) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    lines += [rf"\par\footnotesize {latex_escape(n)}" for n in t.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html(t: Table) -> str:
    """An HTML fragment (``<table>`` with caption and notes) for one table."""
    frame = t.text_frame()
    e = html.escape
    out = [f'<table class="xiqa" id="{e(t.key)}">', f"<caption>{e(t.title)}</caption>",
           "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in [t.row_header, *t.columns]) + "</tr></thead>",
           "<tbody>"]
    for label, values in frame.iterrows():
        out.append(f"<tr><th>{e(str(label))}</th>" + "".join(f"<td>{e(str(v))}</td>" for v in values) + "</tr>")
    out.append("</tbody></table>")
    out += [f'<p class="note">{e(n)}</p>' for n in t.notes]
    return "\n".join(out) + "\n"


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table.xiqa { border-collapse: collapse; margin: 1em 0 0.3em; font-size: 0.85em; }
table.xiqa caption { text-align: left; font-weight: 600; padding-bottom: 0.4em; }
table.xiqa th, table.xiqa td { border: 1px solid #ccc; padding: 0.25em 0.5em; }
table.xiqa td { text-align: right; font-variant-numeric: tabular-nums; }
table.xiqa thead th { background: #f3f3f3; }
p.note { font-size: 0.8em; color: #555; margin: 0.1em 0; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; }
"""


def html_page(title: str, tables: Iterable[Table], figures: Iterable[tuple[str, str]] = (),
              header: str = "") -> str:
    """One self-contained page: every table, then every figure (``(caption, data URI or path)``)."""
    e = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{HTML_STYLE}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if header:
        parts.append(f"<p>{e(header)}</p>")
    parts.append("<h2>Tables</h2>")
    parts += [to_html(t) for t in tables]
    figures = list(figures)
    if figures:
        parts.append("<h2>Figures</h2>")
        for caption, src in figures:
            parts.append(f'<figure><img src="{e(src)}" alt="{e(caption)}">'
                         f'<figcaption>{e(caption)}</figcaption></figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


RENDERERS = {"md": to_markdown, "csv": to_csv, "latex": to_latex, "html": to_html}


def write_tables(tables: Iterable[Table], out: Path, formats: Iterable[str]) -> list[Path]:
    """Write every table in every format: ``<out>/<key><suffix>``. Returns the files written."""
    out = Path(out)
    written = []
    for fmt in formats:
        if fmt not in RENDERERS:
            raise XiqaError(f"unknown report format {fmt!r}; choose from {', '.join(RENDERERS)}")
        for t in tables:
            path = out / f"{t.key}{FORMAT_SUFFIX[fmt]}"
            write_text(path, RENDERERS[fmt](t))
            written.append(path)
    return written
