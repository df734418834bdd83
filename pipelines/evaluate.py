"""DVC stage ``evaluate``: every model version of one grid cell → saliency maps → Pointing Game.

``python -m pipelines.evaluate --dataset objectcxr --arch resnet34`` evaluates every condition
(trained, sr, fr) × seed of ``params.yaml``'s grid for that dataset × arch in one process
(:func:`xiqa.evaluation.run.evaluate_cell`): one evaluation run per model version (experiment
``xiqa-<ds>``) and ``eval/<ds>-<arch>/<cond>-s<seed>.json``; a skipped model (SR without
ImageNet weights) is passed through as ``{status: skipped, reason}`` without a run.
``--condition`` / ``--seed`` restrict the loop (for a rerun by hand).
"""

from __future__ import annotations

import typer

from pipelines import _common
from xiqa.schema import CONDITIONS, Arch, Dataset

app = _common.stage_app(__doc__.splitlines()[0])
CONDITION = typer.Option(None, help=f"only this condition ({', '.join(CONDITIONS)}); repeatable")


@app.command()
def main(
    dataset: Dataset = _common.DATASET,
    arch: Arch = _common.ARCH,
    condition: list[str] = CONDITION,
    seed: list[int] = _common.SEEDS,
) -> None:
    """Explain the test split with every method (smoothing off and on) and play the Pointing Game,
    for every condition x seed of the grid cell."""
    from xiqa.evaluation.run import evaluate_cell

    root, params = _common.params()
    evaluate_cell(root, params, dataset, arch, conditions=condition, seeds=seed, echo=typer.echo)


if __name__ == "__main__":
    _common.run(app)
