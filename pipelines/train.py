"""DVC stage `train`: fine-tune one dataset × arch, once per seed, and register each in MLflow.

    python -m pipelines.train --dataset objectcxr --arch resnet34 [--seed 1 ...] [--device cuda]

One model per seed (default: every seed of ``grid.seeds`` in params.yaml), trained in turn in this
one process, each seeded at its start as if it ran alone, each its own MLflow run and registered
version (alias ``trained-s<seed>``); the seeds are one unit (a rerun after an interruption replaces
the seeds it had registered, see ``xiqa.training.runs``). Writes
``models/<dataset>-<arch>/trained/s<seed>.json`` per seed (run id, model URI, version).
"""

from __future__ import annotations

import typer

from pipelines._common import ARCH, DATASET, DEVICE, SEEDS, params, run, stage_app
from xiqa.schema import Arch, Dataset

app = stage_app(__doc__)


@app.command()
def main(dataset: Dataset = DATASET,
         arch: Arch = ARCH,
         seed: list[int] = SEEDS,
         device: str = DEVICE) -> None:
    """Train, log every epoch, register the best epoch as alias trained-s<seed>, for each seed."""
    from xiqa.training.runs import train_models

    root, p = params()
    for pointer in train_models(root, p, dataset, arch, seed or p.grid.seeds, device=device):
        m = pointer["metrics"]
        typer.echo(f"{pointer['name']} v{pointer['version']} ({pointer['alias']}): epoch {m['best_epoch']}, "
                   f"val acc {m['best_val_accuracy']:.3f}, test acc {m['test_accuracy']:.3f}, "
                   f"test auc {m['test_auc'] if m['test_auc'] is None else round(m['test_auc'], 3)}")


if __name__ == "__main__":
    run(app)
