"""The ``report`` stage's work: aggregate the evaluations of the grid, log the study, export its tables.

:func:`run_study` reads exactly the evaluation pointers the grid in ``params.yaml`` names (never
a folder listing, so a model dropped from the grid drops out of every aggregate), fetches each
evaluation run's per-image CSV and figure maps from MLflow, and logs to experiment
``xiqa-study`` (all runs of one execution share the tag ``xiqa.study``):

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

import json
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xiqa import paths
from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.evaluation.samples import SampleMaps
from xiqa.io import atomic_path, read_pointer, write_json
from xiqa.params import Params

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

__all__ = ["StudyResult", "run_study", "write_headline"]

METRICS = ("pointing_game", "architectures", "classification", "localisation", "sanity")
# the headline of each dataset × arch × condition (aggregate-run keys, besides pg_mean/<method>)
HEADLINE_CLASSIFICATION = ("test_auc_mean", "test_accuracy_mean")

Key = tuple[str, str, str]  # dataset, arch, condition


@dataclass(frozen=True)
class StudyResult:
    """What one report run produced: the study id, how many evaluations it aggregated, the files written."""

    study: str
    evaluations: int
    written: list[Path]


@dataclass
class _Grid:
    """Everything gathered from the grid's evaluation and sanity pointers (and their runs)."""

    frames: dict[Key, list[tuple[int, pd.DataFrame]]] = field(default_factory=dict)  # per seed
    baselines: dict[Key, list[pd.DataFrame]] = field(default_factory=dict)
    geometry: dict[str, dict] = field(default_factory=dict)  # dataset -> τ and how it was derived
    samples: dict[tuple[str, str, str, int], SampleMaps] = field(default_factory=dict)
    skipped: dict[Key, str] = field(default_factory=dict)
    starts: dict[Key, list[str]] = field(default_factory=dict)  # the backbone start of each seed's model
    # learning curves of the trained models {(ds, arch, seed): {metric: [(epoch, value)]}} and of
    # the stand-in starts {start: {metric: [(epoch, value)]}}
    curves: dict[tuple[str, str, int], dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    pretext: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    classif: dict[Key, list[dict[str, float]]] = field(default_factory=dict)  # model runs' metrics
    sanity: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    # methods that could not run on a model (Guided Backprop on a GELU network), per key: {m: why}
    not_applicable: dict[Key, dict[str, str]] = field(default_factory=dict)

    def applicable(self, key: Key) -> list[str]:
        """The grid's methods that ran on the models of ``key``."""
        return [m for m in self.methods if m not in self.not_applicable.get(key, {})]


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
        grid = _gather(root, params, client, Path(tmp))
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


def _classification(grid: _Grid, key: Key) -> dict[str, float]:
    from xiqa.evaluation.aggregate import classification_metrics

    return classification_metrics(grid.classif.get(key, []))


# ---------------------------------------------------------------------- gather the grid's evaluations
def _gather(root: Path, params: Params, client: MlflowClient, tmp: Path) -> _Grid:
    """Read every evaluation pointer of the grid and its run's artifacts (into ``tmp``)."""
    grid, found = _Grid(), None
    cells = params.grid
    for cell in cells.models:
        for cond in S.CONDITIONS:
            if cond != "trained" and cond not in cells.randomised:
                grid.skipped[(cell.dataset, cell.arch, cond)] = "not in params.yaml grid.randomised"
                continue
            for seed in cells.seeds:
                key = (cell.dataset, cell.arch, cond)
                pointer_path = paths.eval_pointer(root, cell.dataset, cell.arch, cond, seed)
                pointer = read_pointer(pointer_path)
                if pointer.get("status") == "skipped":
                    grid.skipped.setdefault(key, pointer.get("reason", "no reason given"))
                    continue
                dst = tmp / f"{cell.key}-{cond}-s{seed}"
                dst.mkdir()
                artifacts = _EvaluationArtifacts(client, pointer, pointer_path, dst)
                frame = artifacts.csv("per_image.csv")
                grid.frames.setdefault(key, []).append((seed, frame))
                if pointer.get("start"):
                    grid.starts.setdefault(key, []).append(pointer["start"])
                grid.baselines.setdefault(key, []).append(artifacts.csv("baselines.csv"))
                this = _geometry(pointer, pointer_path)
                if grid.geometry.setdefault(cell.dataset, this) != this:
                    raise XiqaError(f"{pointer_path}: evaluated at {this}, other {cell.dataset} models at "
                                    f"{grid.geometry[cell.dataset]}: rerun `dvc repro evaluate`")
                refused = pointer.get("not_applicable") or {}
                grid.not_applicable.setdefault(key, {}).update(refused)
                run_methods = list(dict.fromkeys([*frame["method"], *refused]))
                if found is None:
                    found = run_methods
                elif set(run_methods) != set(found):
                    raise XiqaError(f"{pointer_path}: scored methods {run_methods} differ from the other "
                                    f"models' {found}: rerun `dvc repro evaluate`")
                npz = artifacts.path("figure_maps.npz", required=False)
                if npz is not None:
                    grid.samples[(*key, seed)] = SampleMaps.load(npz)
                grid.classif.setdefault(key, []).append(artifacts.model_run_metrics())
                if cond == "trained":
                    grid.curves[(cell.dataset, cell.arch, seed)] = artifacts.histories(
                        pointer["model_run_id"], ("train_loss", "val_auc"))
                    start = pointer.get("start") or ""
                    if start.startswith("stand-in:") and start not in grid.pretext:
                        grid.pretext[start] = artifacts.histories(
                            start.split(":", 1)[1], ("pretext_loss", "pretext_accuracy"))
    if found is None:
        raise XiqaError("params.yaml: the grid has no evaluated model (every one was skipped)")
    grid.sanity = {(c.dataset, c.arch): _sanity(root, c.dataset, c.arch, cells.seeds) for c in cells.models}
    grid.methods = [m for m in S.METHODS if m in found] + [m for m in found if m not in S.METHODS]
    return grid


class _EvaluationArtifacts:
    """One evaluation run's artifacts, fetched from the tracking store into ``dst``.

    Every failure names the pointer and the run, and says which of two things went wrong: the
    run lacks the artifact (rerun the evaluation), or the store could not be read (network,
    login, permissions, disk: the error MLflow or the OS gave)."""

    def __init__(self, client: MlflowClient, pointer: dict, pointer_path: Path, dst: Path) -> None:
        self.client, self.pointer, self.pointer_path, self.dst = client, pointer, pointer_path, dst
        self.run_id = pointer["run_id"]
        self.names = {a.path for a in self._call("list the artifacts of", lambda: client.list_artifacts(self.run_id))}

    def _call(self, what: str, fn: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn()
        except (MlflowException, OSError) as err:
            raise XiqaError(f"{self.pointer_path}: cannot {what} run {self.run_id} "
                            f"({type(err).__name__}: {err})") from None

    def path(self, name: str, required: bool = True) -> Path | None:
        """The local copy of artifact ``name``; None when it is absent and not ``required``."""
        import mlflow

        if name not in self.names:
            if not required:
                return None
            raise XiqaError(f"{self.pointer_path}: run {self.run_id} has no {name} artifact: "
                            "rerun `dvc repro evaluate`")
        return Path(self._call(f"download {name} of", lambda: mlflow.artifacts.download_artifacts(
            run_id=self.run_id, artifact_path=name, dst_path=str(self.dst))))

    def csv(self, name: str) -> pd.DataFrame:
        """The CSV artifact ``name`` (``per_image.csv``, ``baselines.csv``) as a frame."""
        import pandas as pd

        return pd.read_csv(self.path(name))

    def histories(self, run_id: str, keys: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
        """The metric histories ``keys`` of run ``run_id`` as ``[(step, value)]`` sorted by step
        (a key the run never logged is left out)."""
        out = {}
        for key in keys:
            history = self._call(f"read the {key} history of model run {run_id}, evaluated by",
                                 lambda k=key: self.client.get_metric_history(run_id, k))
            if history:
                out[key] = sorted((int(m.step), float(m.value)) for m in history)
        return out

    def model_run_metrics(self) -> dict[str, float]:
        """The final metrics of the training / randomisation run of the evaluated model."""
        model_run = self._call(f"read model run {self.pointer['model_run_id']} evaluated by",
                               lambda: self.client.get_run(self.pointer["model_run_id"]))
        return dict(model_run.data.metrics)


def _geometry(pointer: dict, pointer_path: Path) -> dict:
    """``{tau_px, tolerance, tolerance_at, image_size}`` as the evaluation pointer records them."""
    keys = (S.TAU, "tolerance", "tolerance_at", "image_size")
    missing = [k for k in keys if pointer.get(k) is None]
    if missing:
        raise XiqaError(f"{pointer_path}: missing {', '.join(missing)} (written before τ was logged): "
                        "rerun `dvc repro evaluate`")
    return {k: pointer[k] for k in keys}


def _sanity(root: Path, ds: str, arch: str, seeds: list[int]) -> list[dict]:
    """The ``sanity`` stage's summaries of the trained seeds (a skipped model or a stage not run
    yet has none: Table 9 then says so)."""
    out = []
    for seed in seeds:
        path = paths.sanity_pointer(root, ds, arch, seed)
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise XiqaError(f"{path}: not valid JSON ({err})") from None
        if data.get("status") == "skipped":
            continue
        missing = [k for k in ("mprt", "final_step", "blocks", "random_logit_ssim") if k not in data]
        if missing:
            raise XiqaError(f"{path}: missing {', '.join(missing)}: rerun `dvc repro sanity`")
        out.append(data)
    return out


# ---------------------------------------------------------------------- aggregate runs + DVC metrics
def _log_aggregates(params: Params, grid: _Grid, exp: str,
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
def _log_studies(params: Params, grid: _Grid, exp: str, base_tags: dict[str, str], figures_dir: Path) -> dict:
    """One study run per dataset (architecture metrics, figures); returns the DVC metrics
    ``architectures``."""
    import mlflow

    from xiqa.evaluation.aggregate import architecture_metrics
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
        made = _figures(ds, archs, params.grid.seeds, grid.samples, figures_dir)
        made += write_overlay(ds, archs[0], params.grid.seeds[0], grid.samples, figures_dir)
        made += _sanity_figure(ds, archs, grid.sanity, grid.methods, figures_dir)
        made += _training_figure(ds, archs, params.grid.seeds, grid, figures_dir)
        tags = base_tags | {S.KIND: "study", "dataset": ds, "archs": ",".join(archs)}
        with runs.experiment_run(exp, f"study {ds}", tags):
            mlflow.log_params({"permutations": ev.permutations, "seed": ev.seed})
            if metrics:
                mlflow.log_metrics(metrics)
            for path in made:
                mlflow.log_artifact(str(path), artifact_path="figures")
    return arch_json


def _figures(ds: str, archs: list[str], seeds: list[int], samples: dict, out: Path) -> list[Path]:
    """The four layouts for one dataset, from the figure-sample maps of its models."""
    from xiqa.report import figures as F

    out.mkdir(parents=True, exist_ok=True)
    first, s1 = archs[0], seeds[0]
    label = f"{S.DATASET_LABELS.get(ds, ds)} {S.ARCH_LABELS.get(first, first)}"
    made = []

    def save(fig: Any, name: str) -> None:
        made.append(F.save_figure(fig, out / f"{name}-{ds}.png"))

    trained = samples.get((ds, first, "trained", s1))
    if trained is None:
        return made
    save(F.smoothing_figure(trained, f"{label}, trained seed {s1}: smoothing off / on"), "smoothing")
    variants = [(S.CONDITION_LABELS[c], samples[(ds, first, c, s1)]) for c in ("fr", "sr", "trained")
                if (ds, first, c, s1) in samples]
    save(F.randomisation_figure(variants, f"{label}: FR / SR / trained (seed {s1}), smoothed"), "randomisation")
    by_seed = [(f"seed {s}", samples[(ds, first, "trained", s)]) for s in seeds if (ds, first, "trained", s) in samples]
    if len(by_seed) > 1:
        save(F.seeds_figure(by_seed, f"{label}: trained seeds side by side, smoothed"), "seeds")
    by_arch = [(S.ARCH_LABELS.get(a, a), samples[(ds, a, "trained", s1)]) for a in archs
               if (ds, a, "trained", s1) in samples]
    if len(by_arch) > 1:
        save(F.architectures_figure(by_arch, f"{S.DATASET_LABELS.get(ds, ds)}: architectures side by side "
                                             f"(trained seed {s1}), smoothed"), "architectures")
    return made


def _training_figure(ds: str, archs: Sequence[str], seeds: Sequence[int], grid: _Grid, out: Path) -> list[Path]:
    """``training-<ds>.png``: training loss and validation AUC per epoch of every trained model
    of ``ds``, and the pretext curves of the stand-in starts they began from."""
    from xiqa.report import figures as F

    models = [(f"{S.ARCH_LABELS.get(a, a)} s{s}", grid.curves[(ds, a, s)]) for a in archs for s in seeds
              if grid.curves.get((ds, a, s))]
    if not models:
        return []
    starts = dict.fromkeys(st for a in archs for st in grid.starts.get((ds, a, "trained"), []))
    pretext = [(f"{st.split(':', 1)[0]} {run_arch}", grid.pretext[st]) for st in starts if st in grid.pretext
               for run_arch in [_start_arch(st, archs, grid, ds)]]
    out.mkdir(parents=True, exist_ok=True)
    fig = F.training_figure(models, pretext, f"{S.DATASET_LABELS.get(ds, ds)}: learning curves of the trained "
                                             "models (dashed: ln 2 and AUC 0.5, a model that learned nothing)")
    return [F.save_figure(fig, out / f"training-{ds}.png")]


def _start_arch(start: str, archs: Sequence[str], grid: _Grid, ds: str) -> str:
    return next((S.ARCH_LABELS.get(a, a) for a in archs if start in grid.starts.get((ds, a, "trained"), [])), "")


def _sanity_figure(ds: str, archs: Sequence[str], sanity: dict, methods: list[str], out: Path) -> list[Path]:
    """``sanity-<ds>.png``: the MPRT curves of each arch (mean over its trained seeds)."""
    from xiqa.evaluation.aggregate import sanity_curves
    from xiqa.report import figures as F

    rows = [(S.ARCH_LABELS.get(a, a), sanity[(ds, a)][0]["blocks"], sanity_curves(sanity[(ds, a)], methods))
            for a in archs if sanity.get((ds, a))]
    if not rows:
        return []
    out.mkdir(parents=True, exist_ok=True)
    fig = F.sanity_figure(rows, f"{S.DATASET_LABELS.get(ds, ds)}: model-parameter randomisation test, "
                                "trained models (mean over seeds)", threshold=S.MPRT_PASS_THRESHOLD)
    return [F.save_figure(fig, out / f"sanity-{ds}.png")]


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
