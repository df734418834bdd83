"""DVC stage `pretrain`: the start of an architecture's trained and SR models (SPEC 3).

    python -m pipelines.pretrain --arch resnet34 [--device cuda]

Real ImageNet weights, when found, win: the stage only writes a pointer saying so. Otherwise it
trains the stand-in once per architecture, shared by every dataset and seed (``pretrain.route``:
FractalDB-style fractal classes or rotation prediction on unlabelled training scans), registers it
as ``xiqa-pretrain-<arch>`` and writes ``models/pretrain/<arch>/{start.json,weights.pt}``.
"""

from __future__ import annotations

import typer

from pipelines._common import ARCH, DEVICE, params, run, stage_app
from xiqa.schema import Arch

app = stage_app(__doc__)


@app.command()
def main(arch: Arch = ARCH, device: str = DEVICE) -> None:
    """Resolve or train the start of ARCH and write its pointer."""
    from xiqa.training.runs import pretrain_model

    root, p = params()
    pointer = pretrain_model(root, p, arch, device=device)
    if pointer["start"].startswith("stand-in:"):
        typer.echo(f"{pointer['name']} v{pointer['version']}: {pointer['route']} pretext, accuracy "
                   f"{pointer['pretext_accuracy']:.3f} in {pointer['pretext_seconds']:.0f} s -> {pointer['start']}")
    else:
        typer.echo(f"pretrain {arch}: start {pointer['start']} "
                   f"({pointer.get('imagenet_weights') or pointer.get('reason')})")


if __name__ == "__main__":
    run(app)
