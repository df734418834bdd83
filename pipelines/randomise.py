"""DVC stage `randomise`: semi- (sr) or fully (fr) randomised models, registered in MLflow.

    python -m pipelines.randomise --dataset objectcxr --arch resnet34 --condition fr [--seed 1]

One model per seed (default: every seed of ``grid.seeds`` in params.yaml), each its own MLflow
run and registered version. Writes ``models/<dataset>-<arch>/<condition>/s<seed>.json``: the
registered version, or ``status: skipped`` with the reason when ``sr`` has no ImageNet weights
to start from.
"""

from __future__ import annotations

import typer

from pipelines._common import params, run, stage_app

app = stage_app(__doc__)


@app.command()
def main(dataset: str = typer.Option(..., help="objectcxr or lvot"),
         arch: str = typer.Option(..., help="resnet34, resnet50, efficientnet_b0, efficientnet-b0"),
         condition: str = typer.Option(..., help="sr (ImageNet backbone, random head) or fr (all random)"),
         seed: list[int] = typer.Option(None, help="initialisation seed (repeatable; default: grid.seeds)"),
         device: str = typer.Option(None, help="cpu or cuda (default: `device` in params.yaml)")) -> None:
    """Initialise, measure on val/test, register as alias <condition>-s<seed>, for each seed."""
    from xiqa.training.runs import randomise_model

    if condition not in ("sr", "fr"):
        raise typer.BadParameter(f"condition must be sr or fr, got {condition!r}")
    root, p = params()
    for s in seed or p.grid.seeds:
        pointer = randomise_model(root, p, dataset, arch, condition, s, device=device)
        if pointer["status"] == "skipped":
            typer.echo(f"{pointer['name']} {condition}-s{s}: skipped: {pointer['reason']}")
        else:
            typer.echo(f"{pointer['name']} v{pointer['version']} ({pointer['alias']}): "
                       f"test acc {pointer['metrics']['test_accuracy']:.3f}")


if __name__ == "__main__":
    run(app)
