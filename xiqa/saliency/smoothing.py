"""Gaussian smoothing of final maps (paper Table 2: σ = 1.0, 11×11 kernel, the defaults
:data:`xiqa.schema.SMOOTH_SIGMA` and :data:`xiqa.schema.SMOOTH_KERNEL`), reflect padding."""

from __future__ import annotations

from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur

from xiqa.saliency.methods import normalise
from xiqa.schema import SMOOTH_KERNEL, SMOOTH_SIGMA


def smooth(maps: Tensor, sigma: float = SMOOTH_SIGMA, kernel_size: int = SMOOTH_KERNEL) -> Tensor:
    """Blur each map of ``maps`` [N, H, W] and min-max normalise it again to [0, 1].

    Uses torchvision's ``gaussian_blur``, which pads by reflection (``torch.nn.functional.pad``
    with ``mode="reflect"``, edge pixel not repeated) and normalises its kernel to sum 1. A
    constant map stays constant (all 0). Maps must be at least ``kernel_size // 2 + 1`` pixels
    on each side (reflect padding needs it).
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be [N, H, W], got shape {tuple(maps.shape)}")
    blurred = gaussian_blur(maps[:, None], kernel_size=[kernel_size, kernel_size], sigma=[sigma, sigma])
    return normalise(blurred[:, 0])
