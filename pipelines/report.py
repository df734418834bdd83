"""DVC stage ``report``: aggregate the evaluations of the grid, log the study, export its tables.

Reads exactly the evaluation pointers the grid in ``params.yaml`` names (never a folder
listing, so a model dropped from the grid drops out of every aggregate), fetches each
evaluation run's per-image CSV and figure maps from MLflow, and logs to experiment
``xiqa-study`` (all runs of one execution share the tag ``xiqa.study``):

- one aggregate run per dataset × arch × condition (mean ± std over seeds, bootstrap CIs; the
  no-information baselines and the τ in input pixels the evaluations used);
- one study run per dataset (DoM and RBF-MMD between architectures; the figures);
- one report run holding the exported tables.

Also reads the ``sanity`` stage's summaries of the trained seeds (MPRT, random logit): their
means over seeds go on the trained aggregate runs, their curves into ``figures/sanity-<ds>.png``.

Writes ``metrics/{pointing_game,architectures,classification,localisation,sanity}.json`` (DVC metrics),
``plots/pg-<ds>-<arch>-<cond>.csv`` (DVC plots) and ``reports/`` (``xiqa report`` on this study).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import typer

from pipelines import _common
from xiqa import paths
from xiqa.errors import XiqaError
from xiqa.io import atomic_path, read_pointer, write_json
from xiqa import schema as S

app = _common.stage_app(__doc__.splitlines()[0])

METRICS = ("pointing_game", "architectures", "classification", "localisation", "sanity")


def _new_study_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@app.command()
def main(out: Path = typer.Option(Path("reports"), help="folder for the exported tables and figures")) -> None:
    """Aggregate every evaluation of the grid, log aggregate/study runs, write metrics, plots, reports."""
    root, params = _common.params()
    ev, grid = params.evaluate, params.grid

    import mlflow
    import pandas as pd

    from xiqa.evaluation.aggregate import (architecture_metrics, baseline_metrics, classification_metrics,
                                           condition_metrics, localisation_metrics, sanity_metrics)
    from xiqa.report import figures as F
    from xiqa.report.export import export_report
    from xiqa.tracking import store

    store.ensure_store(root)
    client = mlflow.MlflowClient()
    exp = store.experiment_id(root, S.STUDY_EXPERIMENT)
    study = _new_study_id()
    git = store.git_commit(root)
    base_tags = {S.STUDY: study, "git_commit": git}

    # ------------------------------------------------------------------ gather the grid's evaluations
    tmp = Path(tempfile.mkdtemp(prefix="xiqa-report-"))
    frames: dict[tuple[str, str, str], list[tuple[int, pd.DataFrame]]] = {}
    baselines: dict[tuple[str, str, str], list[pd.DataFrame]] = {}
    geometry: dict[str, dict] = {}  # dataset -> τ and how it was derived, as the evaluations logged it
    samples: dict[tuple[str, str, str, int], F.SampleMaps] = {}
    skipped: dict[tuple[str, str, str], str] = {}
    classif: dict[tuple[str, str], list[dict[str, float]]] = {}
    methods: list[str] | None = None
    for cell in grid.models:
        for cond in S.CONDITIONS:
            if cond != "trained" and cond not in grid.randomised:
                skipped[(cell.dataset, cell.arch, cond)] = "not in params.yaml grid.randomised"
                continue
            for seed in grid.seeds:
                key = (cell.dataset, cell.arch, cond)
                pointer_path = paths.eval_pointer(root, cell.dataset, cell.arch, cond, seed)
                pointer = read_pointer(pointer_path)
                if pointer.get("status") == "skipped":
                    skipped.setdefault(key, pointer.get("reason", "no reason given"))
                    continue
                dst = tmp / f"{cell.key}-{cond}-s{seed}"
                dst.mkdir()
                frame = _artifact_csv(pointer, pointer_path, dst, "per_image.csv")
                frames.setdefault(key, []).append((seed, frame))
                baselines.setdefault(key, []).append(
                    _artifact_csv(pointer, pointer_path, dst, "baselines.csv", ": rerun `dvc repro evaluate`"))
                this = _geometry(pointer, pointer_path)
                if geometry.setdefault(cell.dataset, this) != this:
                    raise XiqaError(f"{pointer_path}: evaluated at {this}, other "
                                    f"{cell.dataset} models at {geometry[cell.dataset]}: rerun `dvc repro evaluate`")
                run_methods = list(dict.fromkeys(frame["method"]))
                if methods is None:
                    methods = run_methods
                elif set(run_methods) != set(methods):
                    raise XiqaError(f"{pointer_path}: scored methods {run_methods} differ from the other "
                                    f"models' {methods}: rerun `dvc repro evaluate`")
                if any(a.path == "figure_maps.npz" for a in client.list_artifacts(pointer["run_id"])):
                    npz = mlflow.artifacts.download_artifacts(run_id=pointer["run_id"],
                                                              artifact_path="figure_maps.npz", dst_path=str(dst))
                    samples[(*key, seed)] = F.SampleMaps.load(Path(npz))
                if cond == "trained":
                    model_run = client.get_run(pointer["model_run_id"])
                    classif.setdefault((cell.dataset, cell.arch), []).append(dict(model_run.data.metrics))
    if methods is None:
        raise XiqaError("params.yaml: the grid has no evaluated model (every one was skipped)")
    sanity = {(c.dataset, c.arch): _sanity(root, c.dataset, c.arch, grid.seeds) for c in grid.models}
    methods = [m for m in S.METHODS if m in methods] + [m for m in methods if m not in S.METHODS]

    # ------------------------------------------------------------------ aggregate runs + DVC metrics
    pg_json: dict = {}
    loc_json: dict = {}
    sanity_json: dict = {}
    for index, cell in enumerate(grid.models):
        for cond in S.CONDITIONS:
            key = (cell.dataset, cell.arch, cond)
            tags = base_tags | {S.KIND: "aggregate", "dataset": cell.dataset, "arch": cell.arch,
                                "condition": cond, "grid_index": str(index), "methods": ",".join(methods)}
            name = f"aggregate {cell.key} {cond}"
            if key not in frames:
                tags |= {S.STATUS: "skipped", S.REASON: skipped.get(key, "not evaluated")}
                with store.experiment_run(exp, name, tags):
                    pass
                continue  # DVC metrics are numbers: a skipped condition has none
            seeds = [s for s, _ in frames[key]]
            metrics = condition_metrics([f for _, f in frames[key]], methods, n_boot=ev.bootstrap, seed=ev.seed)
            metrics |= baseline_metrics(baselines[key], n_boot=ev.bootstrap, seed=ev.seed)
            metrics |= localisation_metrics([f for _, f in frames[key]], methods, n_boot=ev.bootstrap, seed=ev.seed)
            metrics[S.TAU] = geometry[cell.dataset][S.TAU]
            if cond == "trained":
                metrics |= classification_metrics(classif.get((cell.dataset, cell.arch), []))
                sanity_stats = sanity_metrics(sanity[(cell.dataset, cell.arch)], methods)
                metrics |= sanity_stats
                sanity_json.setdefault(cell.dataset, {})[cell.arch] = {
                    stat: {m: {agg: round(sanity_stats[S.sanity_metric(stat, agg, m)], 6) for agg in ("mean", "std")
                               if S.sanity_metric(stat, agg, m) in sanity_stats} for m in methods}
                    for stat in S.SANITY_STATS}
            tags |= {"seeds": ",".join(map(str, seeds))}
            if key in skipped:
                tags[S.REASON] = f"some seeds skipped: {skipped[key]}"
            with store.experiment_run(exp, name, tags):
                mlflow.log_params({"bootstrap": ev.bootstrap, "seed": ev.seed, "target": ev.target,
                                   **geometry[cell.dataset]})
                mlflow.log_metrics(metrics)
            pg_json.setdefault(cell.dataset, {}).setdefault(cell.arch, {})[cond] = {
                m: {k: round(metrics[S.agg_metric(k, m)], 6) for k in ("mean", "std", "ci_low", "ci_high")
                    if S.agg_metric(k, m) in metrics} for m in methods} | {
                f"baseline_{b}": {k: round(metrics[S.agg_baseline_metric(k, b)], 6)
                                  for k in ("mean", "ci_low", "ci_high")} for b in S.BASELINES} | {
                S.TAU: metrics[S.TAU]}
            loc_json.setdefault(cell.dataset, {}).setdefault(cell.arch, {})[cond] = _loc_summary(metrics, methods)

    # ------------------------------------------------------------------ study runs: DoM, MMD, figures
    arch_json: dict = {}
    figures_dir = tmp / "figures"
    datasets = list(dict.fromkeys(c.dataset for c in grid.models))
    for ds in datasets:
        archs = [c.arch for c in grid.models if c.dataset == ds]
        trained = {a: [f for _, f in frames[(ds, a, "trained")]] for a in archs if (ds, a, "trained") in frames}
        metrics = architecture_metrics(trained, methods, permutations=ev.permutations, seed=ev.seed)
        for name, value in metrics.items():  # "dom/<m>[/<A>~<B>]" -> {ds: {"<m>[/<A>~<B>]": {dom: ...}}}
            stat, _, what = name.partition("/")
            arch_json.setdefault(ds, {}).setdefault(what, {})[stat] = round(value, 6)
        made = _figures(ds, archs, grid.seeds, samples, figures_dir)
        made += _sanity_figure(ds, archs, sanity, methods, figures_dir)
        tags = base_tags | {S.KIND: "study", "dataset": ds, "archs": ",".join(archs)}
        with store.experiment_run(exp, f"study {ds}", tags):
            mlflow.log_params({"permutations": ev.permutations, "seed": ev.seed})
            if metrics:
                mlflow.log_metrics(metrics)
            for path in made:
                mlflow.log_artifact(str(path), artifact_path="figures")

    classification_json = {
        ds: {a: {k: round(v, 6) for k, v in classification_metrics(classif.get((ds, a), [])).items()}
             for a in [c.arch for c in grid.models if c.dataset == ds]} for ds in datasets}
    write_json(root / "metrics" / "pointing_game.json", pg_json)
    write_json(root / "metrics" / "architectures.json", arch_json)
    write_json(root / "metrics" / "classification.json", classification_json)
    write_json(root / "metrics" / "localisation.json", loc_json)
    write_json(root / "metrics" / "sanity.json", sanity_json)
    _write_plots(root / "plots", pg_json, methods)

    # ------------------------------------------------------------------ export the tables
    written = export_report(root, root / out, params.report.formats, study=study)
    with store.experiment_run(exp, "report", base_tags | {S.KIND: "report"}):
        for path in written:
            if path.suffix != ".png":
                mlflow.log_artifact(str(path), artifact_path="tables")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    typer.echo(f"study {study}: {sum(len(v) for v in frames.values())} evaluations aggregated; "
               f"{len(written)} files under {out}/")


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


def _sanity(root: Path, ds: str, arch: str, seeds: list[int]) -> list[dict]:
    """The ``sanity`` stage's summaries of the trained seeds (a skipped model or a stage not run
    yet has none: Table 9 then says so)."""
    import json

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


def _artifact_csv(pointer: dict, pointer_path: Path, dst: Path, name: str, hint: str = ""):
    """The evaluation run's CSV artifact ``name`` (``per_image.csv``, ``baselines.csv``), read
    into a frame; a missing one names the pointer, the run and the file."""
    import mlflow
    import pandas as pd

    try:
        csv = mlflow.artifacts.download_artifacts(run_id=pointer["run_id"], artifact_path=name, dst_path=str(dst))
    except Exception as err:
        raise XiqaError(f"{pointer_path}: run {pointer['run_id']} has no {name} artifact "
                        f"({type(err).__name__}){hint}") from None
    return pd.read_csv(csv)


def _geometry(pointer: dict, pointer_path: Path) -> dict:
    """``{tau_px, tolerance, tolerance_at, image_size}`` as the evaluation pointer records them."""
    keys = (S.TAU, "tolerance", "tolerance_at", "image_size")
    missing = [k for k in keys if pointer.get(k) is None]
    if missing:
        raise XiqaError(f"{pointer_path}: missing {', '.join(missing)} (written before τ was logged): "
                        "rerun `dvc repro evaluate`")
    return {k: pointer[k] for k in keys}


def _figures(ds: str, archs: list[str], seeds: list[int], samples: dict, out: Path) -> list[Path]:
    """The four layouts for one dataset, from the figure-sample maps of its models."""
    from xiqa.report import figures as F

    out.mkdir(parents=True, exist_ok=True)
    first, s1 = archs[0], seeds[0]
    label = f"{S.DATASET_LABELS.get(ds, ds)} {S.ARCH_LABELS.get(first, first)}"
    made = []

    def save(fig, name: str) -> None:
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


def _write_plots(folder: Path, pg_json: dict, methods: list[str]) -> None:
    """``plots/pg-<ds>-<arch>-<cond>.csv``: per-method bar data (smoothed mean ± std over seeds),
    then the baselines ``baseline_chance`` and ``baseline_centre``."""
    import pandas as pd

    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for ds, archs in pg_json.items():
            for arch, conds in archs.items():
                for cond, stats in conds.items():
                    rows = [{"method": m, "pg_mean": stats[m]["mean"], "pg_std": stats[m].get("std", 0.0)}
                            for m in methods if m in stats]
                    # the no-information baselines as bars of their own, to read the methods against
                    rows += [{"method": f"baseline_{b}", "pg_mean": stats[f"baseline_{b}"]["mean"], "pg_std": 0.0}
                             for b in S.BASELINES if f"baseline_{b}" in stats]
                    pd.DataFrame(rows, columns=["method", "pg_mean", "pg_std"]).to_csv(
                        tmp / f"pg-{ds}-{arch}-{cond}.csv", index=False)


if __name__ == "__main__":
    _common.run(app)
