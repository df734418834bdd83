"""Each saliency method as a small pure function of captured tensors (SPEC 4).

Shapes: activations ``A`` and their gradients ``G`` are [N, C, h, w]; input gradients are
[N, 3, H, W]; every returned map is [N, h, w] (layer resolution) or [N, H, W] (input resolution).
Nothing here runs the model; :mod:`xiqa.saliency.capture` does that once for all methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# A map whose range is at most this fraction of its largest magnitude is constant: bilinear
# upsampling and blurring turn an exactly constant map into one that varies by a few ulps, which
# min-max normalisation would blow up into noise.
CONSTANT_RTOL = 1e-6


def _lo_hi_constant(flat: Tensor, rtol: float) -> tuple[Tensor, Tensor, Tensor]:
    lo, hi = flat.amin(1), flat.amax(1)
    return lo, hi, (hi - lo) <= rtol * torch.maximum(hi.abs(), lo.abs())


def constant_maps(maps: Tensor, rtol: float = CONSTANT_RTOL) -> Tensor:
    """Bool [N]: which maps of ``maps`` [N, ...] are constant (range ≤ ``rtol`` · max |value|;
    an all-zero map is constant)."""
    flat = maps.flatten(1)
    if flat.shape[1] == 0:
        return torch.ones(flat.shape[0], dtype=torch.bool, device=maps.device)
    return _lo_hi_constant(flat, rtol)[2]


def normalise(maps: Tensor) -> Tensor:
    """Min-max normalise each map of ``maps`` [N, ...] to [0, 1]; a constant map becomes all 0."""
    flat = maps.flatten(1)
    lo, hi, const = _lo_hi_constant(flat, CONSTANT_RTOL)
    # dividing by +inf sends a constant map to exactly 0 without a full-size select
    span = torch.where(const, torch.inf, hi - lo)
    return ((flat - lo[:, None]) / span[:, None]).view_as(maps)


def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear (align_corners=False) resize of [N, h, w] or [N, V, h, w] maps to ``size``."""
    size = tuple(size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    if maps.ndim == 3:
        return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def gradcam(A: Tensor, G: Tensor) -> Tensor:
    """ReLU(Σ_k α_k A_k) with α_k the spatial mean of G_k: [N, h, w], not normalised."""
    alpha = G.mean(dim=(2, 3), keepdim=True)
    return (alpha * A).sum(1).clamp(min=0)


def abs_channel_sum(t: Tensor) -> Tensor:
    """Σ_c |t_c|: [N, C, H, W] → [N, H, W]."""
    return t.abs().sum(1)


def guided_backprop(guided_input_grad: Tensor) -> Tensor:
    """Guided Backprop: ``|guided ∇x|`` summed over channels, [N, 3, H, W] → [N, H, W]."""
    return abs_channel_sum(guided_input_grad)


def input_x_gradient(inputs: Tensor, input_grad: Tensor) -> Tensor:
    """Input × Gradient: ``|x · ∇x|`` summed over channels, [N, 3, H, W] → [N, H, W]."""
    return abs_channel_sum(inputs * input_grad)


def guided_gradcam(guided_map: Tensor, cam_up: Tensor) -> Tensor:
    """Σ_c |GBP_c · cam| = cam · Σ_c |GBP_c| for the non-negative upsampled Grad-CAM ``cam_up``."""
    return guided_map * cam_up


# NormGrad (Rebuffi et al. 2020): the norm of the gradient of a virtual identity layer (VIL)
# inserted after A. Its gradient is an outer product G(p) ⊗ (input of the VIL at p); the
# Frobenius norm of an outer product is the product of the norms, so nothing big is built.
# Channel norms are sqrt(Σ_c ·²): on CPU that is several times faster than
# torch.linalg.vector_norm(dim=1) on NCHW tensors, and a product needs one square root, not two.
def _channel_sq(t: Tensor) -> Tensor:
    """Σ_c t_c² per pixel: [N, C, h, w] → [N, h, w]."""
    return t.square().sum(1)


def _neighbourhood_sq(a_sq: Tensor) -> Tensor:
    """Σ over the zero-padded 3×3 neighbourhood of p of Σ_c A² = 9 · avgpool3(Σ_c A²)."""
    return 9 * F.avg_pool2d(a_sq[:, None], 3, stride=1, padding=1, count_include_pad=True)[:, 0]


def normgrad_scaling(A: Tensor, G: Tensor) -> Tensor:
    """‖A(p) ⊙ G(p)‖ per pixel (VIL: a per-channel scale)."""
    return (A * G).square_().sum(1).sqrt_()


def normgrad_conv1x1(A: Tensor, G: Tensor) -> Tensor:
    """‖A(p)‖ · ‖G(p)‖ per pixel (VIL: a 1×1 convolution)."""
    return (_channel_sq(A) * _channel_sq(G)).sqrt_()


def normgrad_conv3x3(A: Tensor, G: Tensor) -> Tensor:
    """‖3×3 neighbourhood of A at p (zero padded)‖ · ‖G(p)‖ per pixel (VIL: a 3×3 convolution)."""
    return (_neighbourhood_sq(_channel_sq(A)).clamp_(min=0) * _channel_sq(G)).sqrt_()


VILS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "scaling": normgrad_scaling,
    "conv1x1": normgrad_conv1x1,
    "conv3x3": normgrad_conv3x3,
}


def normgrad_layer(A: Tensor, G: Tensor, vils: Sequence[str]) -> Tensor:
    """The ``vils`` maps of one layer, stacked: [N, len(vils), h, w] (shared sums computed once)."""
    out: dict[str, Tensor] = {}
    if "conv1x1" in vils or "conv3x3" in vils:
        g_sq, a_sq = _channel_sq(G), _channel_sq(A)
        if "conv1x1" in vils:
            out["conv1x1"] = (a_sq * g_sq).sqrt_()
        if "conv3x3" in vils:
            out["conv3x3"] = (_neighbourhood_sq(a_sq).clamp_(min=0) * g_sq).sqrt_()
    if "scaling" in vils:
        out["scaling"] = normgrad_scaling(A, G)
    return torch.stack([out[v] for v in vils], dim=1)


def combine_layers(maps: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """Multi-layer NormGrad: the product of per-layer maps [N, ...] (each already upsampled to
    one size and min-max normalised), skipping for each image the layers whose map is constant,
    then normalised (at least one layer). Returns the map and the number of skipped layers per image (long [N]).

    Skipping, rather than multiplying by an all-zero map, keeps a constant layer from erasing the
    evidence of every other layer (the paper's code reset the product instead; DEVIATIONS)."""
    product: Tensor | None = None
    skipped = torch.zeros(0, dtype=torch.long)
    for m in maps:  # an iterable, so that callers can stream layers without holding them all
        if product is None:
            product = torch.ones_like(m)
            skipped = torch.zeros(m.shape[0], dtype=torch.long, device=m.device)
        const = constant_maps(m)
        skipped += const
        if bool(const.any()):
            m = m.masked_fill(const.view(-1, *([1] * (m.ndim - 1))), 1.0)
        product.mul_(m)
    if product is None:
        raise ValueError("combine_layers needs at least one layer map")
    return normalise(product), skipped
