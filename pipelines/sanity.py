"""DVC stage ``sanity``: MPRT and random logit of every trained seed of one grid cell.

``python -m pipelines.sanity --dataset objectcxr --arch resnet34`` reads
``models/<ds>-<arch>/trained/s<seed>.json`` for every seed of the grid and runs the
model-parameter randomisation test (cascading from the logits down) and the random-logit check
on ``sanity.samples`` seeded test images with boxes (:func:`xiqa.evaluation.sanity_run.sanity_cell`):
one ``sanity`` run per model (experiment ``xiqa-<ds>``, metric histories with step = randomised
depth) and ``sanity/<ds>-<arch>/trained-s<seed>.json``. A skipped model is passed through as
``{status: skipped, reason}``.
"""

from __future__ import annotations

import typer

from pipelines import _common
from xiqa.schema import Arch, Dataset

app = _common.stage_app(__doc__.splitlines()[0])


@app.command()
def main(
    dataset: Dataset = _common.DATASET,
    arch: Arch = _common.ARCH,
    seed: list[int] = _common.SEEDS,
) -> None:
    """MPRT and random logit of every trained seed of the grid cell."""
    from xiqa.evaluation.sanity_run import sanity_cell

    root, params = _common.params()
    sanity_cell(root, params, dataset, arch, seeds=seed, echo=typer.echo)


if __name__ == "__main__":
    _common.run(app)
