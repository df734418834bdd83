"""Where a last-block cell looks, and where SPEC 4's upsampling puts it (docs/demo-results/README.md,
"A caution for audits of last-layer maps"): the input pixels that reach cell i of a ResNet's stride-32 last block are centred on
pixel 32·i, while bilinear upsampling with align_corners=False puts the cell at 32·i + 15.5."""

from __future__ import annotations

import pytest
import torch

from saliency_helpers import random_images
from xiqa.models.zoo import get_module, layers
from xiqa.saliency.methods import upsample


def receptive_field(model: torch.nn.Module, layer: str, size: int, cell: int) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1): the first and last input column / row whose pixels reach ``A[:, :, cell, cell]``
    (non-zero gradient), on one random input."""
    seen = {}
    handle = get_module(model, layer).register_forward_hook(lambda m, a, o: seen.__setitem__("a", o))
    x = random_images(1, 7, size).requires_grad_(True)
    try:
        model(x)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(seen["a"][:, :, cell, cell].sum(), x)
    reached = grad.abs().sum((0, 1)) > 0
    cols, rows = torch.nonzero(reached.any(0)).flatten(), torch.nonzero(reached.any(1)).flatten()
    return int(cols.min()), int(cols.max()), int(rows.min()), int(rows.max())


# input sizes at which the whole receptive field of the cell lies inside the image
@pytest.mark.parametrize(("arch", "size", "cell"), [("resnet50", 512, 8), ("resnet34", 1024, 15)])
def test_resnet_last_block_cell_i_is_centred_on_pixel_32i(arch, size, cell, random_model) -> None:
    x0, x1, y0, y1 = receptive_field(random_model(arch), layers(arch)["gradcam"][0], size, cell)
    assert 0 < x0 and x1 < size - 1 and 0 < y0 and y1 < size - 1  # not cut by the border
    assert (x0 + x1) / 2 == (y0 + y1) / 2 == 32 * cell


def test_spec_bilinear_upsampling_puts_cell_i_at_32i_plus_15_5() -> None:
    # a 4 x 4 map that is 1 in cell (2, 2) only, upsampled to 128 px: its peak is 15.5 px right
    # of and below the pixel that cell is centred on (22 px diagonally, more than tau = 15)
    one_hot = torch.zeros(1, 4, 4)
    one_hot[0, 2, 2] = 1.0
    up = upsample(one_hot, (128, 128))[0]
    ys, xs = torch.nonzero(up == up.max(), as_tuple=True)
    assert (float(xs.double().mean()), float(ys.double().mean())) == (32 * 2 + 15.5, 32 * 2 + 15.5)
