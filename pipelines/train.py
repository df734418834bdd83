"""DVC stage `train`: fine-tune one dataset × arch × seed and register it in MLflow.

    python -m pipelines.train --dataset objectcxr --arch resnet34 --seed 1 [--device cuda]

Writes ``models/<dataset>-<arch>/trained/s<seed>.json`` (run id, model URI, version).
"""

from __future__ import annotations

import typer

from pipelines._common import ARCH, DATASET, DEVICE, params, run, stage_app
from xiqa.schema import Arch, Dataset

app = stage_app(__doc__)


@app.command()
def main(dataset: Dataset = DATASET,
         arch: Arch = ARCH,
         seed: int = typer.Option(..., help="training seed"),
         device: str = DEVICE) -> None:
    """Train, log every epoch, register the best epoch as alias trained-s<seed>."""
    from xiqa.training.runs import train_model

    root, p = params()
    pointer = train_model(root, p, dataset, arch, seed, device=device)
    m = pointer["metrics"]
    typer.echo(f"{pointer['name']} v{pointer['version']} ({pointer['alias']}): epoch {m['best_epoch']}, "
               f"val acc {m['best_val_accuracy']:.3f}, test acc {m['test_accuracy']:.3f}, "
               f"test auc {m['test_auc'] if m['test_auc'] is None else round(m['test_auc'], 3)}")


if __name__ == "__main__":
    run(app)
