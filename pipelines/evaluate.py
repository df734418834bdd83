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

app = _common.stage_app(__doc__.splitlines()[0])


@app.command()
def main(
    dataset: str = typer.Option(..., help="objectcxr or lvot"),
    arch: str = typer.Option(..., help="architecture of the grid cell"),
    condition: list[str] = typer.Option(None, help="only this condition (trained, sr, fr); repeatable"),
    seed: list[int] = typer.Option(None, help="only this seed of the grid; repeatable"),
) -> None:
    """Explain the test split with every method (smoothing off and on) and play the Pointing Game,
    for every condition x seed of the grid cell."""
    from xiqa.evaluation.run import evaluate_cell

    root, params = _common.params()
    evaluate_cell(root, params, dataset, arch, conditions=condition, seeds=seed, echo=typer.echo)


if __name__ == "__main__":
    _common.run(app)
