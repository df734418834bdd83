"""The Pointing Game (SPEC 5), vectorised over a batch of maps.

Conventions:

- A map is [H, W]; pixel ``(u, v)`` is column ``u`` (x), row ``v`` (y). The peak is the first
  arg-max in row-major order (``torch.argmax`` on the flattened map returns the first maximum).
- A box is ``(x0, y0, x1, y1)`` of *inclusive* pixel indices in map (input) pixels. The distance
  from the peak to a box is that to its nearest pixel: ``dx = max(x0 - u, 0, u - x1)``, ``dy``
  likewise; a hit is ``dx² + dy² < τ²`` for some box of the image (several boxes act as a union).
- A constant map has no peak: it is a miss and is reported by :func:`constant_maps`.
- An image without boxes is excluded: its hit is NaN, and :func:`xiqa.evaluation.stats.accuracy`
  ignores it.
- τ is in input pixels. The study derives it from the paper's τ at the paper's input size
  (:meth:`xiqa.params.EvaluateParams.tau_px`); nothing here has a default τ.

No-information baselines (SPEC 5), each a pure function of the boxes, the input size and τ:

- :func:`chance_hits`: per image, the exact expected hit of a peak drawn uniformly over the
  pixel centres (the fraction of the ``W × H`` integer pixel coordinates that are hits);
- :func:`centre_hits`: per image, the hit of a peak at :func:`centre_pixel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from xiqa.errors import XiqaError
from xiqa.saliency.methods import constant_maps

if TYPE_CHECKING:
    import numpy as np

__all__ = ["METRIC", "centre_hits", "centre_pixel", "chance_hits", "constant_maps", "hits",
           "is_constant", "peak_hits", "peaks", "scale_boxes"]

is_constant = constant_maps  # the same rule under the name callers may look for


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool
    needs: tuple[str, ...]
    unit: str


METRIC = MetricInfo("pointing_game", higher_is_better=True, needs=("boxes",),
                    unit="fraction of images with at least one box whose peak lies within τ of a box")


def peaks(maps: Tensor) -> Tensor:
    """Long [N, 2]: ``(x, y)`` of each map's first maximum in row-major order; maps [N, H, W]."""
    if maps.ndim != 3:
        raise ValueError(f"maps must be [N, H, W], got shape {tuple(maps.shape)}")
    width = maps.shape[2]
    idx = maps.flatten(1).argmax(1)
    return torch.stack([idx % width, idx // width], dim=1)


def _boxes_by_image(boxes: Sequence[Tensor], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``(every box float64 [B, 4], owner long [B], count per image long [N])``; a box with
    ``x1 < x0`` or ``y1 < y0`` is a :class:`XiqaError` naming its image."""
    flat = [torch.as_tensor(b, device=device).reshape(-1, 4) for b in boxes]
    counts = torch.tensor([len(b) for b in flat], device=device, dtype=torch.long)
    # float64 keeps integer coordinates (and their squares) exact, so "< τ²" is decided exactly.
    every = torch.cat(flat).to(torch.float64) if flat else torch.zeros((0, 4), dtype=torch.float64, device=device)
    owner = torch.repeat_interleave(torch.arange(len(flat), device=device), counts)
    bad = (every[:, 2] < every[:, 0]) | (every[:, 3] < every[:, 1])
    if bool(bad.any()):
        raise XiqaError(f"box {every[bad][0].tolist()} of image {int(owner[bad][0])} has x1 < x0 or y1 < y0")
    return every, owner, counts


def _within(box: Tensor, u: Tensor, v: Tensor, tolerance: float) -> Tensor:
    """The hit rule, broadcasting: ``box`` float64 [..., 4] inclusive ``(x0, y0, x1, y1)``, ``u``
    / ``v`` float64 peak columns / rows broadcastable against ``box[..., 0]``. True where the
    nearest box pixel lies at distance < ``tolerance``: ``dx = max(x0 - u, 0, u - x1)``, ``dy``
    likewise, ``dx² + dy² < τ²``."""
    x0, y0, x1, y1 = box.unbind(-1)
    dx = torch.clamp(torch.maximum(x0 - u, u - x1), min=0.0)
    dy = torch.clamp(torch.maximum(y0 - v, v - y1), min=0.0)
    return (dx * dx + dy * dy) < float(tolerance) ** 2


def peak_hits(peak: Tensor, boxes: Sequence[Tensor], tolerance: float) -> Tensor:
    """Float [N]: 1.0 where the peak ``peak[n] = (x, y)`` (long [N, 2], input pixels) lies within
    ``tolerance`` (strictly less) of a box of ``boxes[n]``, 0.0 where not, NaN where ``boxes[n]``
    is empty. ``boxes[n]`` is [K, 4] inclusive ``(x0, y0, x1, y1)`` in input pixels (K may be 0);
    several boxes act as a union."""
    n = peak.shape[0]
    if len(boxes) != n:
        raise XiqaError(f"got {n} peaks but boxes for {len(boxes)} images")
    device = peak.device
    every, owner, counts = _boxes_by_image(boxes, device)
    out = torch.full((n,), math.nan, dtype=torch.float32, device=device)
    if len(every) == 0:
        return out
    p = peak.to(torch.float64)
    inside = _within(every, p[owner, 0], p[owner, 1], tolerance)
    hit = torch.zeros(n, dtype=torch.long, device=device).index_add_(0, owner, inside.long()) > 0
    has_box = counts > 0
    out[has_box] = hit[has_box].float()
    return out


def hits(maps: Tensor, boxes: Sequence[Tensor], tolerance: float) -> Tensor:
    """Float [N]: 1.0 where the peak of ``maps[n]`` is within ``tolerance`` input pixels
    (strictly less) of a box of ``boxes[n]``, 0.0 where not or where the map is constant, NaN
    where ``boxes[n]`` is empty. ``boxes[n]`` is [K, 4] inclusive ``(x0, y0, x1, y1)`` in map
    pixels (K may be 0)."""
    n = maps.shape[0]
    if len(boxes) != n:
        raise XiqaError(f"got {n} maps but boxes for {len(boxes)} images")
    out = peak_hits(peaks(maps), boxes, tolerance)
    out[constant_maps(maps) & ~torch.isnan(out)] = 0.0
    return out


def centre_pixel(size: tuple[int, int]) -> tuple[int, int]:
    """``(x, y)`` of the centre of a ``size = (W, H)`` input: ``((W - 1) // 2, (H - 1) // 2)``.

    For an odd side that is the middle pixel. For an even side the centre ``(W - 1) / 2`` falls
    between two pixels; a map peaked symmetrically about the centre ties on them, and
    :func:`peaks` (first maximum in row-major order) takes the lower one, so this is the pixel a
    centred single-bump map points at."""
    w, h = (int(s) for s in size)
    if min(w, h) <= 0:
        raise XiqaError(f"image size must be positive, got {size}")
    return (w - 1) // 2, (h - 1) // 2


def centre_hits(boxes: Sequence[Tensor], size: tuple[int, int], tolerance: float) -> Tensor:
    """Float [N] baseline *centre*: the hit (1.0 / 0.0, NaN without boxes) of a peak at
    :func:`centre_pixel` of a ``size = (W, H)`` input, under :func:`peak_hits`' rule."""
    u, v = centre_pixel(size)
    return peak_hits(torch.tensor([[u, v]] * len(boxes), dtype=torch.long).reshape(-1, 2), boxes, tolerance)


def chance_hits(boxes: Sequence[Tensor], size: tuple[int, int], tolerance: float) -> Tensor:
    """Float64 [N] baseline *chance*: the exact expected hit of a peak drawn uniformly over the
    ``W × H`` pixels of a ``size = (W, H)`` input, i.e. the fraction of integer pixel coordinates
    ``(u, v)``, ``0 <= u < W``, ``0 <= v < H``, that :func:`peak_hits` counts as hits for
    ``boxes[n]``; NaN where ``boxes[n]`` is empty.

    Exact: every pixel is decided by the same float64 rule (a count over pixels, divided once),
    with the distances separable per box (a [K, H, W] broadcast per image)."""
    w, h = (int(s) for s in size)
    if min(w, h) <= 0:
        raise XiqaError(f"image size must be positive, got {size}")
    every, _, counts = _boxes_by_image(boxes, torch.device("cpu"))
    out = torch.full((len(boxes),), math.nan, dtype=torch.float64)
    u = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    v = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    starts = torch.cumsum(counts, 0) - counts
    for i in torch.nonzero(counts > 0).flatten().tolist():
        mine = every[int(starts[i]):int(starts[i] + counts[i])].view(-1, 1, 1, 4)
        union = _within(mine, u, v, tolerance).any(dim=0)  # [H, W]
        out[i] = int(union.sum()) / (w * h)
    return out


def scale_boxes(boxes: Tensor | np.ndarray, orig_size: tuple[int, int], input_size: tuple[int, int]) -> Tensor:
    """Map inclusive integer boxes [K, 4] from an original image of ``orig_size = (w, h)`` to an
    input of ``input_size = (W, H)`` (a plain resize, aspect ratio not kept); long [K, 4].

    Pixel ``i`` is the interval ``[i, i + 1)``; a resize maps continuous ``x`` to ``x · W / w``.
    The scaled box is every input pixel that overlaps the original box:
    ``x0' = floor(x0 · W / w)``, ``x1' = ceil((x1 + 1) · W / w) - 1`` (likewise for y), clipped
    to the input, in exact integer arithmetic. So a box never vanishes and boxes tiling the
    original tile the input. Float coordinates are rounded to the nearest pixel first.
    """
    w, h = (int(s) for s in orig_size)
    W, H = (int(s) for s in input_size)
    if min(w, h, W, H) <= 0:
        raise XiqaError(f"image sizes must be positive, got original {orig_size} and input {input_size}")
    b = torch.as_tensor(boxes)
    b = (b.round() if b.is_floating_point() else b).to(torch.long).reshape(-1, 4)
    x0, y0, x1, y1 = b.unbind(1)
    nx0 = torch.div(x0 * W, w, rounding_mode="floor")
    ny0 = torch.div(y0 * H, h, rounding_mode="floor")
    nx1 = -torch.div(-(x1 + 1) * W, w, rounding_mode="floor") - 1
    ny1 = -torch.div(-(y1 + 1) * H, h, rounding_mode="floor") - 1
    out = torch.stack([nx0.clamp(0, W - 1), ny0.clamp(0, H - 1), nx1.clamp(0, W - 1), ny1.clamp(0, H - 1)], 1)
    return out
