"""The ``xiqa`` command: user commands only (audits, reports, registry look-ups).

Every command has ``--help``. A user error (:class:`xiqa.errors.XiqaError`) prints one sentence
to stderr and exits with status 2, without a traceback: :class:`_Guarded`, the app's root group,
is the one place that turns it into that exit, for every command and sub-command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from xiqa.errors import XiqaError
from xiqa.schema import REPORT_FORMATS

if TYPE_CHECKING:
    from xiqa.params import EvaluateParams


class _Guarded(TyperGroup):
    """The CLI's one error boundary: a :class:`XiqaError` raised by any command (sub-commands
    run inside the root group's ``invoke``) prints ``xiqa: error: <sentence>`` to stderr and exits
    with its ``exit_code``; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer may vendor its own click)
        try:
            return super().invoke(ctx)
        except XiqaError as err:
            typer.echo(f"xiqa: error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except Exception as err:  # a request the server refused (HTTP 403), a full disk: the user's
            from xiqa.io import disk_full
            from xiqa.tracking.store import refusal, unreachable

            refused = refusal(err) or unreachable(err) or disk_full(err)
            if refused is None:
                raise
            typer.echo(f"xiqa: error: {refused}", err=True)
            raise typer.Exit(refused.exit_code) from None


app = typer.Typer(
    cls=_Guarded,
    name="xiqa",
    help="Explainable medical image-quality assessment: saliency, Pointing Game, MLflow registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Look up and pull registered models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
grid_app = typer.Typer(help="Run the study's grid on a Ray cluster (pip install 'xiqa[ray]').",
                       no_args_is_help=True)
app.add_typer(grid_app, name="grid")


@app.callback()
def _root() -> None:
    """xiqa: train, explain and audit image-quality classifiers (see README.md)."""


# --- models (issue: training and registry) ------------------------------------------------
@models_app.command("list")
def models_list(
    prefix: str = typer.Option("xiqa-", help="only registered models whose name starts with this"),
    as_json: bool = typer.Option(False, "--json", help="print JSON rows instead of a table"),
) -> None:
    """Every registered model version: aliases, tags (condition, seed, data md5, commit) and the
    run's metrics, from the embedded store (mlflow.db) or MLFLOW_TRACKING_URI."""
    import json

    from xiqa.paths import project_root
    from xiqa.tracking.lookup import list_models
    from xiqa.tracking.store import open_client

    rows = list_models(open_client(project_root()), prefix)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    if not rows:
        typer.echo(f"no registered models starting with {prefix!r}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="registered models")
    for col in ("model", "v", "aliases", "condition", "seed", "data md5", "commit",
                "val auc", "test acc", "test auc"):
        table.add_column(col, justify="right" if col in ("v", "seed") or " a" in col else "left")
    for r in rows:
        t, m = r["tags"], r["metrics"]
        val_auc = m.get("best_val_auc", m.get("val_auc"))
        table.add_row(r["name"], r["version"], ", ".join(r["aliases"]), t.get("condition", ""),
                      t.get("seed", ""), t.get("data_md5", "")[:12], t.get("git_commit", "")[:12],
                      *(f"{v:.3f}" if v is not None else "" for v in
                        (val_auc, m.get("test_accuracy"), m.get("test_auc"))))
    Console(width=200).print(table)


@models_app.command("pull")
def models_pull(
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION, e.g. xiqa-objectcxr-resnet34@best"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for weights.pt and model_card.json"),
) -> None:
    """Write a model's weights (a state dict for torch.load(..., weights_only=True)) and a model
    card (params, metrics, data md5, git commit, aliases) into a folder."""
    from xiqa.paths import project_root
    from xiqa.tracking.lookup import pull
    from xiqa.tracking.store import open_client

    weights, card = pull(open_client(project_root()), ref, out)
    typer.echo(f"{weights}\n{card}")


# --- audit (issue 26: models registered outside xiqa) --------------------------------------
@app.command()
def audit(
    ref: str = typer.Argument(..., help="a registered PyTorch classifier: models:/NAME/VERSION or NAME@ALIAS"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="a prepared dataset of this project: objectcxr or lvot"),
    image_size: int | None = typer.Option(None, help="input side in pixels (else the version's image_size tag)"),
    channels: int | None = typer.Option(None, help="1 or 3 input channels (else the channels tag)"),
    mean: str | None = typer.Option(None, help='per-channel mean of [0, 1] pixels, "0.485,0.456,0.406" '
                                               "(else the mean tag)"),
    std: str | None = typer.Option(None, help="per-channel std, like --mean (else the std tag)"),
    positive_class: int | None = typer.Option(None, help="the logit of 'quality problem present' "
                                                         "(else the positive_class tag)"),
    out: Path = typer.Option(Path("audits"), "--out", "-o", help="folder for the summaries (a sub-folder per model)"),
    report: bool = typer.Option(True, help="add the model to the latest study's tables (xiqa report)"),
) -> None:
    """Audit a classifier someone registered with mlflow.pytorch (pickle or pt2 format): derive its
    layers, play the Pointing Game on the dataset's test split, run MPRT and the random-logit check,
    log the evaluation and sanity runs and, with --report, put it beside the study's models."""
    from xiqa.evaluation.audit import AUDIT_TAG, audit_model
    from xiqa.params import Params, load_params
    from xiqa.paths import project_root

    root = project_root()
    path = root / "params.yaml"
    params = load_params(path) if path.is_file() else Params()
    given = {"image_size": image_size, "channels": channels, "mean": mean, "std": std,
             "positive_class": positive_class}
    name = ref.removeprefix("models:/").replace("/", "-v").replace("@", "-")
    result = audit_model(root, params, ref, dataset, given, out / name, echo=typer.echo)
    ev = result.evaluation
    best = max(ev["pg_smooth"], key=lambda m: ev["pg_smooth"][m])
    typer.echo(f"{result.name} v{result.version}: {ev['n_images']} images, best smoothed Pointing Game "
               f"{best} {ev['pg_smooth'][best]:.3f} (chance {ev['baselines']['chance']:.3f}); "
               f"evaluation run {ev['run_id']}" + (f", sanity run {result.sanity['run_id']}" if result.sanity else ""))
    if report:
        from xiqa.report.audited import add_to_study

        study = add_to_study(root, params, dataset, result.arch, ev, result.sanity, ev.get("not_applicable", {}),
                             {AUDIT_TAG: "true"})
        typer.echo(f"added to study {study}: `xiqa report` shows {dataset} {result.arch} beside its models")


# --- report / explain (issue: evaluation and report) --------------------------------------


@app.command()
def report(
    fmt: list[str] = typer.Option(list(REPORT_FORMATS), "--format", "-f",
                                  help="md, csv, latex or html; repeat or comma-separate for several"),
    out: Path = typer.Option(Path("reports"), "--out", "-o", help="folder for the table files"),
    study: str | None = typer.Option(None, help="study id (tag xiqa.study); default: the latest"),
) -> None:
    """Write the paper's Tables 2-7 (and, with html, one page with tables and figures) from the
    study runs in the tracking store (embedded mlflow.db, or MLFLOW_TRACKING_URI). Never
    recomputes anything from models."""
    from xiqa.paths import project_root
    from xiqa.report.export import export_report

    formats = [f.strip() for item in fmt for f in item.split(",") if f.strip()]
    written = export_report(project_root(), out, formats, study=study)
    for path in written:
        typer.echo(str(path))


@app.command()
def explain(
    image: Path = typer.Argument(..., help="the scan: PNG, JPEG, NPY or DICOM"),
    model: str = typer.Option(..., "--model", "-m", help="registered model NAME@ALIAS or NAME/VERSION, "
                                                           "e.g. xiqa-objectcxr-resnet34@best"),
    boxes: str | None = typer.Option(None, help='ground-truth boxes in the scan\'s pixels, inclusive: '
                                                   '"x0,y0,x1,y1;x0,y0,x1,y1"'),
    method: list[str] | None = typer.Option(None, "--method", help="saliency method (repeatable); default: all ten"),
    out: Path = typer.Option(Path("overlay.png"), "--out", "-o", help="overlay PNG to write"),
    tolerance: float | None = typer.Option(
        None, help="Pointing Game tau in the model's input pixels; default: params.yaml's evaluate.tolerance "
                   "scaled from evaluate.tolerance_at (the paper's input size) to the model's input size, as "
                   "the study does (15 px at 600 px is 3.2 px for a 128 px Object-CXR model)"),
    smooth: bool = typer.Option(True, help="Gaussian smoothing before the peak, with params.yaml's "
                                            "evaluate.smooth_sigma and smooth_kernel, as in the study"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """Explain one scan with a registered model: prediction, probability, the Pointing Game tau
    in input pixels, each method's peak and, with --boxes, hit or miss; writes the overlay."""
    import math

    from xiqa.data.images import read_scan
    from xiqa.evaluation.scan import explain_scan
    from xiqa.paths import project_root
    from xiqa.report.audit import audit_figure, load_registered, parse_boxes
    from xiqa.report.figures import save_figure
    from xiqa.saliency import check_methods
    from xiqa.tracking.store import open_client

    # everything the user typed is checked before the (slow) model is loaded
    gt = parse_boxes(boxes)
    if method:
        check_methods(method)
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance > 0):
        raise XiqaError(f"--tolerance: must be a positive number of input pixels, got {tolerance}")
    gray = read_scan(image)
    root = project_root()
    open_client(root)  # an existing store (a missing embedded one is an error, not created)
    net, arch, size, mv = load_registered(model, device)
    ev = _evaluate_params(root)
    if tolerance is None:
        tau, how = _study_tau(ev, mv.tags.get("dataset", ""), size)
    else:
        tau, how = tolerance, "--tolerance"
    result, maps, img, in_boxes = explain_scan(net, arch, gray, size, gt, method, tolerance=tau,
                                               smooth=smooth, smooth_sigma=ev.smooth_sigma,
                                               smooth_kernel=ev.smooth_kernel)
    typer.echo(f"{image}: {mv.name} version {mv.version} ({arch}, input {size}x{size})")
    typer.echo(f"Pointing Game tau: {tau:g} input pixels ({how})")
    for line in result.lines():
        typer.echo(line)
    save_figure(audit_figure(result, maps, img, in_boxes, f"{image.name} — {mv.name} v{mv.version}"), out)
    typer.echo(f"overlay: {out}")


def _evaluate_params(root: Path) -> EvaluateParams:
    """The project's ``evaluate`` parameters (the paper's defaults when there is no params.yaml)."""
    from xiqa.params import Params, load_params

    path = root / "params.yaml"
    return (load_params(path) if path.is_file() else Params()).evaluate


def _study_tau(ev: EvaluateParams, dataset: str, size: int) -> tuple[float, str]:
    """``(τ in input pixels, how it was derived)`` for a model of ``dataset`` at input ``size``,
    by the study's rule (:meth:`xiqa.params.EvaluateParams.tau_px`)."""
    if not dataset:
        raise XiqaError("the model version has no 'dataset' tag, so tau cannot be derived: pass --tolerance")
    at = getattr(ev.tolerance_at, dataset, None)
    return ev.tau_px(dataset, size), f"{ev.tolerance:g} px at {at} px, scaled to {size} px"


# --- grid (issue 16: the grid on a Ray cluster) -------------------------------------------
@grid_app.command("run")
def grid_run(
    address: str | None = typer.Option(None, help="Ray cluster address (host:port of `ray start "
                                                     "--head`, or auto); default: a Ray instance on "
                                                     "this machine"),
    stages: str = typer.Option("train,randomise,evaluate,sanity",
                               help="comma-separated grid stages whose cells become Ray tasks"),
    gpus_per_cell: float = typer.Option(1.0, help="GPUs each cell reserves when params.yaml says "
                                                  "device: cuda (else one CPU)"),
    max_retries: int = typer.Option(2, min=0, help="retries of a cell that failed or whose node died"),
    repo: str | None = typer.Option(None, help="what every node clones (a URL holding the driver's "
                                                  "commit); default: this project's folder"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the out-of-date cells, run nothing"),
) -> None:
    """Run the out-of-date cells of train / randomise / evaluate / sanity as Ray tasks (one clone, one
    `dvc repro --single-item` each, results exchanged through the DVC remote's run cache and the
    MLflow tracking store), then `dvc repro` here, which restores them and runs the report."""
    from xiqa.grid.driver import run_grid
    from xiqa.paths import project_root

    run_grid(project_root(), address=address, stages=[s.strip() for s in stages.split(",") if s.strip()],
             gpus_per_cell=gpus_per_cell, max_retries=max_retries, dry_run=dry_run, repo=repo,
             echo=typer.echo)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
