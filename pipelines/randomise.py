"""DVC stage `randomise`: one semi- (sr) or fully (fr) randomised model, registered in MLflow.

    python -m pipelines.randomise --dataset objectcxr --arch resnet34 --condition fr --seed 1

Writes ``models/<dataset>-<arch>/<condition>-s<seed>.json``: the registered version, or
``status: skipped`` with the reason when ``sr`` has no ImageNet weights to start from.
"""

from __future__ import annotations

import typer

from pipelines._common import params, run, stage_app

app = stage_app(__doc__)


@app.command()
def main(dataset: str = typer.Option(..., help="objectcxr or lvot"),
         arch: str = typer.Option(..., help="resnet34, resnet50, efficientnet_b0, efficientnet-b0"),
         condition: str = typer.Option(..., help="sr (ImageNet backbone, random head) or fr (all random)"),
         seed: int = typer.Option(..., help="initialisation seed"),
         device: str = typer.Option(None, help="cpu or cuda (default: `device` in params.yaml)")) -> None:
    """Initialise, measure on val/test, register as alias <condition>-s<seed>."""
    from xiqa.training.runs import randomise_model

    if condition not in ("sr", "fr"):
        raise typer.BadParameter(f"condition must be sr or fr, got {condition!r}")
    root, p = params()
    pointer = randomise_model(root, p, dataset, arch, condition, seed, device=device)
    if pointer["status"] == "skipped":
        typer.echo(f"{pointer['name']} {condition}-s{seed}: skipped: {pointer['reason']}")
    else:
        typer.echo(f"{pointer['name']} v{pointer['version']} ({pointer['alias']}): "
                   f"test acc {pointer['metrics']['test_accuracy']:.3f}")


if __name__ == "__main__":
    run(app)
