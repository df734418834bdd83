"""The Pointing Game (SPEC 5), vectorised over a batch of maps.

Conventions:

- A map is [H, W]; pixel ``(u, v)`` is column ``u`` (x), row ``v`` (y). The peak is the first
  arg-max in row-major order (``torch.argmax`` on the flattened map returns the first maximum).
- A box is ``(x0, y0, x1, y1)`` of *inclusive* pixel indices in map (input) pixels. The distance
  from the peak to a box is that to its nearest pixel: ``dx = max(x0 - u, 0, u - x1)``, ``dy``
  likewise; a hit is ``dx² + dy² < τ²`` for some box of the image (several boxes act as a union).
- A constant map has no peak: it is a miss and is reported by :func:`constant_maps`.
- An image without boxes is excluded: its hit is NaN, and :func:`accuracy` ignores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from xiqa.errors import XiqaError
from xiqa.saliency.methods import constant_maps

__all__ = ["METRIC", "accuracy", "constant_maps", "hits", "is_constant", "peaks", "scale_boxes"]

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


def hits(maps: Tensor, boxes: Sequence[Tensor], tolerance: float = 15.0) -> Tensor:
    """Float [N]: 1.0 where the peak of ``maps[n]`` is within ``tolerance`` (strictly less) of a
    box of ``boxes[n]``, 0.0 where not or where the map is constant, NaN where ``boxes[n]`` is
    empty. ``boxes[n]`` is [K, 4] inclusive ``(x0, y0, x1, y1)`` in map pixels (K may be 0)."""
    n = maps.shape[0]
    if len(boxes) != n:
        raise XiqaError(f"got {n} maps but boxes for {len(boxes)} images")
    device = maps.device
    peak = peaks(maps)
    flat = [torch.as_tensor(b, device=device).reshape(-1, 4) for b in boxes]
    counts = torch.tensor([len(b) for b in flat], device=device, dtype=torch.long)
    out = torch.full((n,), math.nan, dtype=torch.float32, device=device)
    if int(counts.sum()) == 0:
        return out
    # float64 keeps integer coordinates (and their squares) exact, so "< τ²" is decided exactly.
    every = torch.cat(flat).to(torch.float64)
    x0, y0, x1, y1 = every.unbind(1)
    bad = (x1 < x0) | (y1 < y0)
    if bool(bad.any()):
        owner_bad = torch.repeat_interleave(torch.arange(n, device=device), counts)[bad][0]
        raise XiqaError(f"box {every[bad][0].tolist()} of image {int(owner_bad)} has x1 < x0 or y1 < y0")
    owner = torch.repeat_interleave(torch.arange(n, device=device), counts)
    u = peak[owner, 0].to(torch.float64)
    v = peak[owner, 1].to(torch.float64)
    zero = torch.zeros_like(u)
    dx = torch.maximum(torch.maximum(x0 - u, zero), u - x1)
    dy = torch.maximum(torch.maximum(y0 - v, zero), v - y1)
    inside = (dx * dx + dy * dy) < float(tolerance) ** 2
    hit = torch.zeros(n, dtype=torch.long, device=device).index_add_(0, owner, inside.long()) > 0
    hit &= ~constant_maps(maps)
    has_box = counts > 0
    out[has_box] = hit[has_box].float()
    return out


def accuracy(hit: Tensor) -> float:
    """T / (T + F) over the images with boxes (NaN entries excluded); NaN if there are none."""
    valid = hit[~torch.isnan(hit)]
    return float(valid.mean()) if valid.numel() else math.nan


def scale_boxes(boxes: Tensor, orig_size: tuple[int, int], input_size: tuple[int, int]) -> Tensor:
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
