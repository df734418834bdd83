"""The ``report`` stage's work: aggregate the evaluations of the grid, log the study, export its tables.

:func:`run_study` reads exactly the evaluation pointers the grid in ``params.yaml`` names (never
a folder listing, so a model dropped from the grid drops out of every aggregate), fetches each
evaluation run's per-image CSV and figure maps from MLflow (:mod:`xiqa.report.gather`), and logs
to experiment ``xiqa-study`` (all runs of one execution share the tag ``xiqa.study``):

- one aggregate run per dataset × arch × condition (mean ± std over seeds, bootstrap CIs; the
  no-information baselines and the τ in input pixels the evaluations used);
- one study run per dataset (DoM and RBF-MMD between architectures; the figures);
- one report run holding the exported tables.

It also reads the ``sanity`` stage's summaries of the trained seeds (MPRT, random logit): their
means over seeds go on the trained aggregate runs, their curves into ``figures/sanity-<ds>.png``.

Writes the DVC metrics, headline numbers only (:func:`write_headline`:
``metrics/<ds>-<arch>/<metric>.json``, one ``{condition: value}`` per file), the DVC plots
(``plots/pg-<ds>.csv``, one grouped bar chart per dataset) and the report folder: the tables
(:func:`xiqa.report.export.export_report` on this study) and the full metric sets
``<report>/metrics/{pointing_game,architectures,classification,localisation,sanity}.json``.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from xiqa import paths
from xiqa import schema as S
from xiqa.io import atomic_path, write_json
from xiqa.params import Params
from xiqa.report.gather import Key, StudyInputs, gather

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["StudyResult", "run_study", "write_headline"]

METRICS = ("pointing_game", "architectures", "classification", "localisation", "sanity")
# the headline of each dataset × arch × condition (aggregate-run keys, besides pg_mean/<method>)
HEADLINE_CLASSIFICATION = ("test_auc_mean", "test_accuracy_mean")

@dataclass(frozen=True)
class StudyResult:
    """What one report run produced: the study id, how many evaluations it aggregated, the files written."""

    study: str
    evaluations: int
    written: list[Path]


def new_study_id() -> str:
    """A sortable, unique study id: UTC time plus 6 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_study(root: Path, params: Params, out: Path) -> StudyResult:
    """Aggregate every evaluation of the grid, log aggregate / study / report runs, write the
    DVC metrics and plots under ``root`` and the report (tables, full metric sets) under ``out``
    (relative to ``root``)."""
    import mlflow

    from xiqa.report.export import export_report
    from xiqa.tracking import provenance, runs, store

    store.ensure_store(root)
    client = mlflow.MlflowClient()
    exp = store.experiment_id(root, S.STUDY_EXPERIMENT)
    study = new_study_id()
    base_tags = {S.STUDY: study, "git_commit": provenance.git_commit(root)}
    with tempfile.TemporaryDirectory(prefix="xiqa-report-") as tmp:
        grid = gather(root, params, client, Path(tmp))
        pg_json, loc_json, sanity_json, headline = _log_aggregates(params, grid, exp, base_tags)
        arch_json = _log_studies(params, grid, exp, base_tags, Path(tmp) / "figures")
    classification_json: dict = {}
    for cell in params.grid.models:
        classification_json.setdefault(cell.dataset, {})[cell.arch] = {
            cond: {k: round(v, 6) for k, v in _classification(grid, (cell.dataset, cell.arch, cond)).items()}
            for cond in S.CONDITIONS if (cell.dataset, cell.arch, cond) in grid.frames}
    write_headline(root / "metrics", headline)
    _write_plots(root / "plots", pg_json, grid.methods)

    written = export_report(root, root / out, params.report.formats, study=study)
    full_sets = []
    for name, data in zip(METRICS, (pg_json, arch_json, classification_json, loc_json, sanity_json), strict=True):
        full_sets.append(root / out / "metrics" / f"{name}.json")
        write_json(full_sets[-1], data)
    with runs.experiment_run(exp, "report", base_tags | {S.KIND: "report"}):
        for path in written:
            if path.suffix != ".png":
                mlflow.log_artifact(str(path), artifact_path="tables")
        for path in full_sets:
            mlflow.log_artifact(str(path), artifact_path="metrics")
    written += full_sets
    return StudyResult(study, sum(len(v) for v in grid.frames.values()), written)


def _classification(grid: StudyInputs, key: Key) -> dict[str, float]:
    from xiqa.evaluation.aggregate import classification_metrics

    return classification_metrics(grid.classif.get(key, []))


# ---------------------------------------------------------------------- aggregate runs + DVC metrics
def _log_aggregates(params: Params, grid: StudyInputs, exp: str,
                    base_tags: dict[str, str]) -> tuple[dict, dict, dict, dict[Key, dict[str, float]]]:
    """One aggregate run per dataset × arch × condition; returns the full metric sets
    ``(pointing_game, localisation, sanity)`` and the headline of each logged key."""
    import mlflow

    from xiqa.evaluation.aggregate import (
        baseline_metrics,
        condition_metrics,
        localisation_metrics,
        sanity_metrics,
    )
    from xiqa.tracking import runs

    ev, methods = params.evaluate, grid.methods
    pg_json: dict = {}
    loc_json: dict = {}
    sanity_json: dict = {}
    headline: dict[Key, dict[str, float]] = {}
    for index, cell in enumerate(params.grid.models):
        for cond in S.CONDITIONS:
            key = (cell.dataset, cell.arch, cond)
            tags = base_tags | {S.KIND: "aggregate", "dataset": cell.dataset, "arch": cell.arch,
                                "condition": cond, "grid_index": str(index), "methods": ",".join(methods)}
            name = f"aggregate {cell.key} {cond}"
            if key not in grid.frames:
                tags |= {S.STATUS: "skipped", S.REASON: grid.skipped.get(key, "not evaluated")}
                with runs.experiment_run(exp, name, tags):
                    pass  # a run holding only the reason, so the tables can say why
                continue  # DVC metrics are numbers: a skipped condition has none
            frames = [f for _, f in grid.frames[key]]
            ran = grid.applicable(key)
            tags |= {S.not_applicable_tag(m): why for m, why in grid.not_applicable.get(key, {}).items()}
            metrics = condition_metrics(frames, ran, n_boot=ev.bootstrap, seed=ev.seed)
            metrics |= baseline_metrics(grid.baselines[key], n_boot=ev.bootstrap, seed=ev.seed)
            metrics |= localisation_metrics(frames, ran, n_boot=ev.bootstrap, seed=ev.seed)
            metrics[S.TAU] = grid.geometry[cell.dataset][S.TAU]
            metrics |= _classification(grid, key)
            if cond == "trained":
                sanity_stats = sanity_metrics(grid.sanity[(cell.dataset, cell.arch)], ran)
                metrics |= sanity_stats
                sanity_json.setdefault(cell.dataset, {})[cell.arch] = {
                    stat: {m: {agg: round(sanity_stats[S.sanity_metric(stat, agg, m)], 6) for agg in ("mean", "std")
                               if S.sanity_metric(stat, agg, m) in sanity_stats} for m in methods}
                    for stat in S.SANITY_STATS}
            tags |= {"seeds": ",".join(str(s) for s, _ in grid.frames[key])}
            if grid.starts.get(key):
                tags["start"] = ",".join(dict.fromkeys(grid.starts[key]))
            if grid.precisions.get(key):
                tags["precision"] = ",".join(dict.fromkeys(grid.precisions[key]))
            if key in grid.skipped:
                tags[S.REASON] = f"some seeds skipped: {grid.skipped[key]}"
            with runs.experiment_run(exp, name, tags):
                mlflow.log_params({"bootstrap": ev.bootstrap, "seed": ev.seed, "target": ev.target,
                                   "smooth_sigma": ev.smooth_sigma, "smooth_kernel": ev.smooth_kernel,
                                   **grid.geometry[cell.dataset]})
                mlflow.log_metrics(metrics)
            pg_json.setdefault(cell.dataset, {}).setdefault(cell.arch, {})[cond] = _pg_summary(metrics, ran)
            loc_json.setdefault(cell.dataset, {}).setdefault(cell.arch, {})[cond] = _loc_summary(metrics, ran)
            headline[key] = {k: round(metrics[k], 6) for k in (*(S.agg_metric("mean", m) for m in ran),
                                                                *HEADLINE_CLASSIFICATION) if k in metrics}
    return pg_json, loc_json, sanity_json, headline


def write_headline(folder: Path, headline: dict[Key, dict[str, float]]) -> list[Path]:
    """Write the DVC metrics: ``<folder>/<ds>-<arch>/<key>.json`` = ``{condition: value}`` for each
    headline key of the aggregate runs (``pg_mean/<method>``, ``test_auc_mean``,
    ``test_accuracy_mean``), replacing ``folder``; returns the files, relative to ``folder``.

    One file per dataset × arch × key because ``dvc metrics show`` prints a row per file and a
    column per key: the rows name the model and the metric, the columns are the conditions, so
    the table stays 3 value columns wide (and ``dvc metrics diff`` a row per file × condition)."""
    by_file: dict[Path, dict[str, float]] = {}
    for (ds, arch, cond), values in headline.items():
        for name, value in values.items():
            by_file.setdefault(Path(paths.model_key(ds, arch)) / f"{name}.json", {})[cond] = value
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for rel, by_cond in by_file.items():
            write_json(tmp / rel, by_cond)
    return list(by_file)


def _pg_summary(metrics: dict[str, float], methods: list[str]) -> dict:
    """``{method: {mean, std, ci_low, ci_high}, baseline_<b>: {...}, tau_px}`` (smoothed maps), rounded."""
    return {m: {k: round(metrics[S.agg_metric(k, m)], 6) for k in ("mean", "std", "ci_low", "ci_high")
                if S.agg_metric(k, m) in metrics} for m in methods} | {
        f"baseline_{b}": {k: round(metrics[S.agg_baseline_metric(k, b)], 6)
                          for k in ("mean", "ci_low", "ci_high")} for b in S.BASELINES} | {
        S.TAU: metrics[S.TAU]}


def _loc_summary(metrics: dict[str, float], methods: list[str]) -> dict:
    """``{metric: {method or baseline_<b>: {mean, std, ci_low, ci_high}}}`` (smoothed maps), rounded."""
    out: dict = {}
    for k in S.LOC_METRICS:
        for m in methods:
            out.setdefault(k, {})[m] = {st: round(metrics[S.loc_agg_metric(k, st, m)], 6)
                                        for st in ("mean", "std", "ci_low", "ci_high")
                                        if S.loc_agg_metric(k, st, m) in metrics}
        for b in S.LOC_BASELINES:
            out[k][f"baseline_{b}"] = {st: round(metrics[S.loc_agg_baseline_metric(k, st, b)], 6)
                                       for st in ("mean", "ci_low", "ci_high")
                                       if S.loc_agg_baseline_metric(k, st, b) in metrics}
    return out


# ---------------------------------------------------------------------- study runs: DoM, MMD, figures
def _log_studies(params: Params, grid: StudyInputs, exp: str, base_tags: dict[str, str], figures_dir: Path) -> dict:
    """One study run per dataset (architecture metrics, figures); returns the DVC metrics
    ``architectures``."""
    import mlflow

    from xiqa.evaluation.aggregate import architecture_metrics
    from xiqa.report import figures as F
    from xiqa.report.overlay import write_overlay
    from xiqa.tracking import runs

    ev, models = params.evaluate, params.grid.models
    arch_json: dict = {}
    for ds in dict.fromkeys(c.dataset for c in models):
        archs: list[str] = [c.arch for c in models if c.dataset == ds]
        trained: dict[str, list[pd.DataFrame]] = {
            a: [f for _, f in grid.frames[(ds, a, "trained")]] for a in archs if (ds, a, "trained") in grid.frames}
        common = [m for m in grid.methods if all(m in grid.applicable((ds, a, "trained")) for a in trained)]
        metrics = architecture_metrics(trained, common, permutations=ev.permutations, seed=ev.seed)
        for name, value in metrics.items():  # "dom/<m>[/<A>~<B>]" -> {ds: {"<m>[/<A>~<B>]": {dom: ...}}}
            stat, _, what = name.partition("/")
            arch_json.setdefault(ds, {}).setdefault(what, {})[stat] = round(value, 6)
        made = F.write_layouts(ds, archs, params.grid.seeds, grid.samples, figures_dir)
        made += write_overlay(ds, archs[0], params.grid.seeds[0], grid.samples, figures_dir)
        made += F.write_sanity_figure(ds, archs, grid.sanity, grid.methods, figures_dir)
        made += F.write_training_figure(ds, archs, params.grid.seeds, grid, figures_dir)
        tags = base_tags | {S.KIND: "study", "dataset": ds, "archs": ",".join(archs)}
        with runs.experiment_run(exp, f"study {ds}", tags):
            mlflow.log_params({"permutations": ev.permutations, "seed": ev.seed})
            if metrics:
                mlflow.log_metrics(metrics)
            for path in made:
                mlflow.log_artifact(str(path), artifact_path="figures")
    return arch_json


def _write_plots(folder: Path, pg_json: dict, methods: list[str]) -> None:
    """``plots/pg-<ds>.csv``, one grouped bar chart per dataset (dvc.yaml's ``plots``): per arch
    and condition, each method's smoothed Pointing Game mean ± std over seeds, then the
    no-information baselines ``baseline_chance`` and ``baseline_centre`` to read them against."""
    import pandas as pd

    columns = ["dataset", "arch", "condition", "method", "pg_mean", "pg_std"]
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for ds, archs in pg_json.items():
            rows: list[tuple] = []
            for arch, conds in archs.items():
                for cond, stats in conds.items():
                    bars = [(m, stats[m]["mean"], stats[m].get("std", 0.0)) for m in methods if m in stats]
                    bars += [(f"baseline_{b}", stats[f"baseline_{b}"]["mean"], 0.0)
                             for b in S.BASELINES if f"baseline_{b}" in stats]
                    rows += [(ds, arch, cond, *bar) for bar in bars]
            pd.DataFrame(rows, columns=columns).to_csv(tmp / f"pg-{ds}.csv", index=False)
