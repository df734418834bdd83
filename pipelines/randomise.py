"""DVC stage `randomise`: semi- (sr) or fully (fr) randomised models, registered in MLflow.

    python -m pipelines.randomise --dataset objectcxr --arch resnet34 --condition fr [--seed 1]

One model per seed (default: every seed of ``grid.seeds`` in params.yaml), each its own MLflow
run and registered version; the seeds are one unit (a rerun after an interruption replaces the
seeds it had registered, see ``xiqa.training.runs``). Writes
``models/<dataset>-<arch>/<condition>/s<seed>.json``: the registered version, or
``status: skipped`` with the reason when ``sr`` has no ImageNet weights to start from.
"""

from __future__ import annotations

import typer

from pipelines._common import ARCH, DATASET, DEVICE, SEEDS, params, run, stage_app
from xiqa.schema import Arch, Dataset, RandomCondition

app = stage_app(__doc__)


@app.command()
def main(dataset: Dataset = DATASET,
         arch: Arch = ARCH,
         condition: RandomCondition = typer.Option(..., help="sr (ImageNet backbone, random head) or fr (all random)"),
         seed: list[int] = SEEDS,
         device: str = DEVICE) -> None:
    """Initialise, measure on val/test, register as alias <condition>-s<seed>, for each seed."""
    from xiqa.training.runs import randomise_models

    root, p = params()
    for pointer in randomise_models(root, p, dataset, arch, condition, seed or p.grid.seeds,
                                    device=device):
        if pointer["status"] == "skipped":
            typer.echo(f"{pointer['name']} {condition}-s{pointer['seed']}: skipped: {pointer['reason']}")
        else:
            typer.echo(f"{pointer['name']} v{pointer['version']} ({pointer['alias']}): "
                       f"test acc {pointer['metrics']['test_accuracy']:.3f}")


if __name__ == "__main__":
    run(app)
