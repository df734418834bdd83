"""DVC stage ``evaluate``: one model version → saliency maps → Pointing Game → one MLflow run.

``python -m pipelines.evaluate --dataset objectcxr --arch resnet34 --condition trained --seed 1``
reads ``models/<ds>-<arch>/<cond>-s<seed>.json``, loads that registered version, scores the test
split (:func:`xiqa.evaluation.scoring.score_split`), logs an evaluation run (experiment
``xiqa-<ds>``, tagged with the model version it scored) and writes
``eval/<ds>-<arch>/<cond>-s<seed>.json``. A skipped model (SR without ImageNet weights) is
passed through as ``{status: skipped, reason}`` without a run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer

from pipelines import _common
from xiqa import paths
from xiqa.errors import XiqaError
from xiqa.io import write_json
from xiqa.report import schema as S

app = _common.stage_app(__doc__.splitlines()[0])


def read_pointer(path: Path) -> dict:
    """A model or evaluation pointer; a missing or malformed file names itself."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise XiqaError(f"{path}: not found (run the stage that writes it first: `dvc repro`)") from None
    except json.JSONDecodeError as err:
        raise XiqaError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise XiqaError(f"{path}: expected a JSON object")
    if data.get("status") == "skipped":
        return data
    missing = [k for k in ("run_id", "model_uri") if not data.get(k)]
    if missing:
        raise XiqaError(f"{path}: missing {', '.join(missing)}")
    return data


@app.command()
def main(
    dataset: str = typer.Option(..., help="objectcxr or lvot"),
    arch: str = typer.Option(..., help="architecture of the grid cell"),
    condition: str = typer.Option(..., help="trained, sr or fr"),
    seed: int = typer.Option(..., help="seed of the model version"),
) -> None:
    """Explain the test split with every method (smoothing off and on) and play the Pointing Game."""
    root, params = _common.params()
    ev = params.evaluate
    pointer = read_pointer(paths.model_pointer(root, dataset, arch, condition, seed))
    out = paths.eval_pointer(root, dataset, arch, condition, seed)
    if pointer.get("status") == "skipped":
        write_json(out, {"status": "skipped", "reason": pointer.get("reason", "no reason given")})
        typer.echo(f"{dataset}-{arch} {condition}-s{seed}: skipped ({pointer.get('reason')})")
        return

    import mlflow
    import torch
    from rich.progress import Progress

    from xiqa import saliency
    from xiqa.data.dataset import load_split
    from xiqa.evaluation.scoring import figure_sample, read_boxes, score_split
    from xiqa.tracking import registry, store

    image_size = params.train.recipe(dataset).image_size
    split = load_split(root, dataset, "test", image_size)
    boxes = read_boxes(paths.prepared_dir(root, dataset) / "boxes.csv")
    scored = [i for i in split.ids if len(boxes.get(i, ())) > 0]
    sample = figure_sample(scored, ev.figure_samples, ev.seed)
    methods = list(ev.methods or saliency.METHODS)
    unknown = [m for m in methods if m not in saliency.METHODS]
    if unknown:
        raise XiqaError(f"params.yaml: evaluate.methods: unknown method(s) {', '.join(unknown)}")

    store.ensure_store(root)
    try:
        model = registry.load_model(pointer["model_uri"], params.device)
    except Exception as err:  # the store lost the model, or the URI is stale
        raise XiqaError(f"{pointer['model_uri']}: cannot load the model ({type(err).__name__}: {err})") from None

    def smooth(maps: torch.Tensor) -> torch.Tensor:
        return saliency.smooth(maps, sigma=ev.smooth_sigma, kernel_size=ev.smooth_kernel)

    with Progress(transient=True) as bar:
        task = bar.add_task(f"{dataset}-{arch} {condition}-s{seed}", total=len(scored))
        result = score_split(model, arch, split, boxes, methods=methods, tolerance=ev.tolerance,
                             target=ev.target, smooth=smooth, batch_size=ev.batch_size,
                             layers=ev.layers.get(arch), sample_ids=sample,
                             progress=lambda n: bar.advance(task, n))

    pg_off, pg_on = result.accuracies(False), result.accuracies(True)
    const_off, const_on = result.constant_maps(False), result.constant_maps(True)
    metrics = {S.pg_metric(m, False): v for m, v in pg_off.items()}
    metrics |= {S.pg_metric(m, True): v for m, v in pg_on.items()}
    metrics |= {f"constant_maps/{m}": float(v) for m, v in const_off.items()}
    metrics |= {f"constant_maps_smooth/{m}": float(v) for m, v in const_on.items()}
    metrics["n_images"] = float(len(scored))
    metrics["constant_maps"] = float(sum(const_off.values()) + sum(const_on.values()))

    name = pointer.get("name") or paths.registered_model_name(dataset, arch)
    tags = {S.KIND: "evaluation", "dataset": dataset, "arch": arch, "condition": condition,
            "seed": str(seed), "model_name": name, "model_version": str(pointer.get("version", "")),
            "model_run_id": pointer["run_id"], "model_uri": pointer["model_uri"],
            "git_commit": store.git_commit(root), "data_md5": registry.data_md5(root, dataset)}
    run_params = {"tolerance": ev.tolerance, "target": ev.target, "methods": ",".join(methods),
                  "smooth_sigma": ev.smooth_sigma, "smooth_kernel": ev.smooth_kernel,
                  "image_size": image_size, "n_test": len(split), "figure_samples": len(sample)}
    with store.tracked_run(root, dataset, f"evaluate {dataset}-{arch} {paths.alias(condition, seed)}",
                           run_params, tags) as run:
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = Path(tmp) / "per_image.csv"
            result.per_image.to_csv(csv_path, index=False)
            mlflow.log_artifact(str(csv_path))
            if result.sample is not None:
                mlflow.log_artifact(str(result.sample.save(Path(tmp) / "figure_maps.npz")))
        run_id = run.info.run_id
    if pointer.get("version"):
        try:  # link the version back to its latest evaluation (best effort: the run holds the link too)
            mlflow.MlflowClient().set_model_version_tag(name, str(pointer["version"]), "evaluation_run_id", run_id)
        except Exception:
            pass
    write_json(out, {"run_id": run_id, "model_run_id": pointer["run_id"], "model_uri": pointer["model_uri"],
                     "version": pointer.get("version"), "n_images": len(scored),
                     "constant_maps": int(metrics["constant_maps"]),
                     "pg": {m: round(v, 6) for m, v in pg_off.items()},
                     "pg_smooth": {m: round(v, 6) for m, v in pg_on.items()}})
    best = max(pg_on, key=pg_on.get)
    typer.echo(f"{dataset}-{arch} {condition}-s{seed}: {len(scored)} images scored; "
               f"best smoothed PG {best} {pg_on[best]:.3f}; run {run_id}")


if __name__ == "__main__":
    _common.run(app)
