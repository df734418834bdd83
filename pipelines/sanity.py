"""DVC stage ``sanity``: MPRT and random logit of every trained seed of one grid cell.

``python -m pipelines.sanity --dataset objectcxr --arch resnet34`` reads
``models/<ds>-<arch>/trained/s<seed>.json`` for every seed of the grid, runs the
model-parameter randomisation test (cascading from the logits down) and the random-logit check
on ``sanity.samples`` seeded test images with boxes
(:class:`xiqa.evaluation.sanity_run.SanityCell`), logs one ``sanity`` run per model (experiment
``xiqa-<ds>``, metric histories with step = randomised depth) and writes
``sanity/<ds>-<arch>/trained-s<seed>.json``. A skipped model is passed through as
``{status: skipped, reason}``.
"""

from __future__ import annotations

import typer

from pipelines import _common
from xiqa import paths
from xiqa.io import read_pointer, write_json

app = _common.stage_app(__doc__.splitlines()[0])


@app.command()
def main(
    dataset: str = typer.Option(..., help="objectcxr or lvot"),
    arch: str = typer.Option(..., help="architecture of the grid cell"),
    seed: list[int] = typer.Option(None, help="only this seed of the grid; repeatable"),
) -> None:
    """MPRT and random logit of every trained seed of the grid cell."""
    from xiqa.evaluation.sanity_run import SanityCell

    root, params = _common.params()
    cell = None
    for s in seed or params.grid.seeds:
        pointer = read_pointer(paths.model_pointer(root, dataset, arch, "trained", s))
        out = paths.sanity_pointer(root, dataset, arch, s)
        if pointer.get("status") == "skipped":
            write_json(out, {"status": "skipped", "reason": pointer.get("reason", "no reason given")})
            continue
        cell = cell or SanityCell(root, params, dataset, arch)
        summary = cell.check(pointer, s, out)
        final = summary["final_step"]
        worst = max(summary["mprt"], key=lambda m: summary["mprt"][m]["spearman"][final] or -1.0)
        typer.echo(f"{dataset}-{arch} trained-s{s}: {len(cell.ids)} images x {final} randomisation steps in "
                   f"{summary['seconds']:.1f} s; highest final Spearman {worst} "
                   f"{summary['mprt'][worst]['spearman'][final]}; run {summary['run_id']}")


if __name__ == "__main__":
    _common.run(app)
