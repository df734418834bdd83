"""The derived saliency presets of CNNs, as a Markdown table: ``python scripts/derived_presets.py [ARCH ...]``.

For each architecture (default: the study's three torchvision ones and the five of issue 26), a
model is built with no weights and :func:`xiqa.models.derive.derive` probes it once at 224 px,
cutting multi-layer NormGrad at the paper's depth J where the study has one
(:data:`xiqa.models.zoo.PAPER_DEPTH`). Printed per architecture: the Grad-CAM layer, the
single-layer NormGrad layer, the multi-layer ones (shallow to deep; J of the derived count), the
number of MPRT cascade steps, and whether Guided Backprop applies
(:func:`xiqa.saliency.capture.guided_refusal`: ReLU or SiLU/Swish activations only).
"""

from __future__ import annotations

import argparse
import sys

from torch import nn

from xiqa.errors import XiqaError
from xiqa.models import zoo
from xiqa.models.derive import derive
from xiqa.saliency.capture import guided_refusal

ARCHS = ("resnet34", "resnet50", "efficientnet_b0", "densenet121", "resnet18", "mobilenet_v3_small",
         "convnext_tiny", "regnet_y_400mf")


def activations(model: nn.Module) -> str:
    """The activation module types of ``model`` (torch.nn's), sorted: ``"ReLU, Sigmoid"``."""
    return ", ".join(sorted({type(m).__name__ for m in model.modules()
                             if type(m).__module__ == "torch.nn.modules.activation"}))


def row(arch: str) -> str:
    """One table row of ``arch``."""
    model = zoo.constructor(arch)()
    depth = zoo.PAPER_DEPTH.get(arch)
    found = derive(model, depth=depth)
    available = len(derive(model).multi) if depth is not None else len(found.multi)
    refusal = guided_refusal(model)
    guided = "yes" if refusal is None else "no: " + refusal.split(";")[0]
    multi = ", ".join(f"`{name}`" for name in found.multi)
    return (f"| {arch} | `{found.gradcam}` | `{found.single}` | {multi} ({len(found.multi)} of {available}) "
            f"| {len(found.cascade)} | {guided} ({activations(model)}) |")


def main() -> None:
    """Print the table of the architectures named (default :data:`ARCHS`); exit 2 on a bad name."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=list(ARCHS), help="architecture names (default: the eight)")
    args = parser.parse_args()
    try:
        rows = [row(arch) for arch in args.archs]
    except XiqaError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print("| arch | Grad-CAM layer | single | multi (J of derived) | cascade steps | Guided Backprop (activations) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
