"""Localisation beyond the Pointing Game (SPEC 6.1): mass, rank, AUC and top-k of a map on a box mask.

Every metric is a pure function of maps ``[N, H, W]`` (any real dtype; explain's float32 maps in
[0, 1]) and boolean masks ``[N, H, W]`` (:func:`box_masks`: the union of an image's inclusive
boxes at input size). They follow Quantus 0.6 (``quantus.metrics.localisation``) with its default
arguments (``abs=False``; ``normalise=True`` divides by the largest |value|, which none of these
metrics can see), computed on the raw map values, negative values included:

========  ===========================================================================  =============
name      definition (P pixels, P₁ = |mask|, P₀ = P − P₁)                               Quantus class
========  ===========================================================================  =============
mass      Σ_{mask} a / Σ a: the map's mass inside the mask (energy-based pointing game)  RelevanceMassAccuracy
rank      fraction of the P₁ highest-valued pixels that lie in the mask                 RelevanceRankAccuracy
auc       ROC AUC of the map values as scores for "pixel in mask" (Mann-Whitney U)       AUC (sklearn)
topk      fraction of the k = round(f · P) highest-valued pixels that lie in the mask    TopKIntersection
========  ===========================================================================  =============

Where Quantus leaves something undefined, xiqa fixes it (docs/DEVIATIONS.md):

- **Ties.** AUC gives tied pixels their average rank, exactly as sklearn's ``roc_curve`` + ``auc``
  (the ROC's diagonal segments). rank and topk take "the k highest" with numpy's unstable
  ``argsort`` in Quantus, so a tie group cut by the top-k boundary makes its answer depend on the
  sort implementation. xiqa counts such a group by expectation: if s of its g pixels fit into
  the top k, each counts s / g (the mean over every order of the tied pixels). Where no tie group
  straddles the boundary this equals Quantus' value.
- **Constant maps** (:func:`xiqa.saliency.methods.constant_maps`, the Pointing Game's rule)
  carry no ranking: with ``on_constant="nan"`` (the study's default) all four metrics are NaN
  and :attr:`Scores.constant` counts them. With ``on_constant="score"`` ties are broken by
  expectation as above, so a constant map scores its no-information values (mass = rank =
  topk = P₁ / P, auc = 0.5); :func:`baselines` uses that for the uniform map.
- **Empty masks** (no box): all four NaN, :attr:`Scores.empty` (as Quantus). **Full masks**
  (P₀ = 0): auc NaN (no negative pixel; sklearn's ROC is undefined). A map whose values sum to 0
  without being constant (only possible with negative values) has mass NaN (Quantus: ±inf).
- **k** of topk: Quantus takes a pixel count (default 1000, about 2 % of 224²); xiqa takes a
  fraction f of the image, :data:`TOPK_FRACTION` = 0.05 by default, k = max(1, ⌊f · P + ½⌋)
  (:func:`topk_count`), so that one parameter means the same at 112, 224 and 600 px. 5 % is a
  round, a-priori choice (the top 5 % of pixels, a region larger than the paper's 15 px
  Pointing Game disc, ~1.4 % of 224², and smaller than most boxes); a box smaller than k pixels
  caps topk at |box| / k.

Cost: rank, auc and topk share one sort per map (:func:`scores` computes all four together);
mass needs no sort. Sums are taken in float64. No extra forward or backward pass.

No-information baselines (:func:`baselines`): a uniform map and a centre Gaussian
``exp(-((u - cx)² / σx² + (v - cy)² / σy²) / 2)`` centred on the image centre
``(cx, cy) = ((W - 1) / 2, (H - 1) / 2)`` (pixel centres at integer coordinates) with
σx = :data:`CENTRE_SIGMA` · W, σy = :data:`CENTRE_SIGMA` · H, σ = 0.25 of the side (a priori: the
±2σ ellipse touches the image border, the usual spread of a centre prior). Both are scored by the
same functions as the methods' maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from xiqa.errors import XiqaError
from xiqa.evaluation.pointing_game import MetricInfo
from xiqa.saliency.methods import constant_maps

__all__ = ["CENTRE_SIGMA", "METRICS", "NAMES", "TOPK_FRACTION", "Scores", "auc", "average_ranks", "baselines",
           "box_mask", "box_masks", "centre_gaussian_map", "mass_accuracy", "rank_accuracy",
           "scores", "topk_count", "topk_intersection", "uniform_map"]

TOPK_FRACTION = 0.05
CENTRE_SIGMA = 0.25

METRICS: dict[str, MetricInfo] = {
    "mass": MetricInfo("mass", higher_is_better=True, needs=("boxes",),
                       unit="map mass inside the box mask / total map mass (energy-based pointing game)"),
    "rank": MetricInfo("rank", higher_is_better=True, needs=("boxes",),
                       unit="fraction of the |mask| highest-valued pixels that lie in the box mask"),
    "auc": MetricInfo("auc", higher_is_better=True, needs=("boxes",),
                      unit="ROC AUC of map values as scores for pixel-in-box-mask (0.5: no information)"),
    "topk": MetricInfo("topk", higher_is_better=True, needs=("boxes",),
                       unit="fraction of the top-k pixels (k a fraction of the image) that lie in the box mask"),
}
NAMES = tuple(METRICS)
OnConstant = Literal["nan", "score"]


# --------------------------------------------------------------------------- masks
def _boxes_long(b: Tensor | np.ndarray, image: int) -> Tensor:
    t = torch.as_tensor(b).reshape(-1, 4)
    if t.is_floating_point() and not (bool(torch.isfinite(t).all()) and bool((t == t.round()).all())):
        raise XiqaError(f"boxes of image {image} must be integer pixel indices, got {t.tolist()}")
    return t.to(torch.long)


def box_masks(boxes: Sequence[Tensor | np.ndarray], size: tuple[int, int],
              device: torch.device | str | None = None) -> Tensor:
    """Bool [N, H, W]: pixel ``(row v, column u)`` of mask n is True iff it lies in some box of
    ``boxes[n]``. ``boxes[n]`` is [K, 4] inclusive ``(x0, y0, x1, y1)`` pixel indices in input
    pixels (x = column), K may be 0 (an all-False mask); ``size = (H, W)``. Parts of a box outside
    the image are clipped. A box with x1 < x0 or y1 < y0 is a :class:`XiqaError`."""
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise XiqaError(f"mask size must be positive, got {size}")
    out = torch.zeros(len(boxes), h, w, dtype=torch.bool, device=device)
    for n, b in enumerate(boxes):
        # one slice assignment per box: images have a handful of boxes
        for x0, y0, x1, y1 in _boxes_long(b, n).tolist():
            if x1 < x0 or y1 < y0:
                raise XiqaError(f"box {[x0, y0, x1, y1]} of image {n} has x1 < x0 or y1 < y0")
            out[n, max(y0, 0):max(y1 + 1, 0), max(x0, 0):max(x1 + 1, 0)] = True
    return out


def box_mask(boxes: Tensor | np.ndarray, size: tuple[int, int],
             device: torch.device | str | None = None) -> Tensor:
    """Bool [H, W]: the union of ``boxes`` [K, 4] (inclusive ``(x0, y0, x1, y1)``), ``size = (H, W)``."""
    return box_masks([boxes], size, device)[0]


# --------------------------------------------------------------------------- baselines
def uniform_map(size: tuple[int, int], device: torch.device | str | None = None) -> Tensor:
    """Float64 [H, W] of ones: the map that knows nothing."""
    return torch.ones(*size, dtype=torch.float64, device=device)


def centre_gaussian_map(size: tuple[int, int], sigma: float = CENTRE_SIGMA,
                        device: torch.device | str | None = None) -> Tensor:
    """Float64 [H, W]: the centre prior, a Gaussian at the image centre with σ = ``sigma`` × side
    (see module doc); its peak is 1."""
    h, w = (int(s) for s in size)
    v = (torch.arange(h, dtype=torch.float64, device=device) - (h - 1) / 2) / (sigma * h)
    u = (torch.arange(w, dtype=torch.float64, device=device) - (w - 1) / 2) / (sigma * w)
    return torch.exp(-0.5 * (v[:, None] ** 2 + u[None, :] ** 2))


# --------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Scores:
    """The four metrics of N maps: float64 [N] each (NaN where undefined, see module doc), and
    bool [N] flags ``constant`` (the map was constant) and ``empty`` (the mask was empty)."""

    mass: Tensor
    rank: Tensor
    auc: Tensor
    topk: Tensor
    constant: Tensor
    empty: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        """``{name: float64 [N]}`` for the four metrics, keys as in :data:`METRICS`."""
        return {name: getattr(self, name) for name in NAMES}

    def __getitem__(self, index: Tensor | slice) -> Scores:
        return Scores(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def topk_count(pixels: int, fraction: float = TOPK_FRACTION) -> int:
    """k = max(1, ⌊fraction · pixels + ½⌋) (round half up), for 0 < ``fraction`` ≤ 1."""
    if not 0.0 < fraction <= 1.0:
        raise XiqaError(f"top-k fraction must lie in (0, 1], got {fraction}")
    return max(1, min(pixels, math.floor(fraction * pixels + 0.5)))


def _flatten(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if maps.ndim != 3:
        raise XiqaError(f"maps must be [N, H, W], got shape {tuple(maps.shape)}")
    if masks.shape != maps.shape:
        raise XiqaError(f"masks {tuple(masks.shape)} must have the maps' shape {tuple(maps.shape)}")
    if masks.dtype != torch.bool:
        raise XiqaError(f"masks must be bool, got {masks.dtype}")
    if maps.shape[1] * maps.shape[2] == 0:
        raise XiqaError(f"maps must have at least one pixel, got shape {tuple(maps.shape)}")
    bad = ~torch.isfinite(maps.flatten(1)).all(1)
    if bool(bad.any()):
        raise XiqaError(f"map {int(bad.nonzero()[0, 0])} has non-finite values (NaN or inf)")
    return maps.flatten(1), masks.flatten(1)


@dataclass(frozen=True)
class _Ranked:
    """Each map's pixels in descending order of value: the mask there (bool [N, P]) and the
    1-based first / last position of each pixel's tie group (int32 [N, P])."""

    mask: Tensor
    first: Tensor
    last: Tensor

    def expected_in_top(self, k: Tensor) -> Tensor:
        """Float64 [N]: mask pixels among the top ``k`` [N] of each map, a tie group cut by the
        boundary counting by expectation (s of its g pixels fit: each counts s / g)."""
        inside = (torch.minimum(self.last, k[:, None]) - self.first + 1).clamp_(min=0)
        frac = inside.to(torch.float64) / (self.last - self.first + 1)
        return (frac * self.mask).sum(1)


def _tie_groups(values: Tensor) -> tuple[Tensor, Tensor]:
    """For rows sorted either way, [N, P]: the 1-based first and last position (int32 [N, P]) of
    the run of equal values each entry belongs to."""
    n, p = values.shape
    # int32 positions halve the memory traffic of these O(P) passes (P < 2³¹ pixels)
    pos = torch.arange(1, p + 1, dtype=torch.int32, device=values.device).expand(n, p)
    starts = torch.ones(n, p, dtype=torch.bool, device=values.device)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, pos, 0).cummax(1).values
    last = torch.where(ends, pos, p + 1).flip(1).cummin(1).values.flip(1)
    return first, last


def _rank(flat_maps: Tensor, flat_masks: Tensor) -> _Ranked:
    values, order = flat_maps.sort(dim=1, descending=True)  # the one sort per map
    return _Ranked(flat_masks.gather(1, order), *_tie_groups(values))


def average_ranks(x: Tensor) -> Tensor:
    """Float64 [N, P]: the ascending ranks 1..P of each row of ``x`` [N, P], ties getting their
    average rank (``scipy.stats.rankdata(method="average")``)."""
    values, order = x.sort(dim=1)
    first, last = _tie_groups(values)
    return torch.empty(x.shape, dtype=torch.float64, device=x.device).scatter_(
        1, order, (first + last).to(torch.float64) / 2)


def _mass(flat_maps: Tensor, flat_masks: Tensor) -> Tensor:
    total = flat_maps.sum(1, dtype=torch.float64)
    inside = torch.where(flat_masks, flat_maps, 0).sum(1, dtype=torch.float64)
    return torch.where(total != 0, inside / total, math.nan)


def _auc(r: _Ranked, n_in: Tensor) -> Tensor:
    p = r.mask.shape[1]
    # ascending average rank of a pixel = P + 1 - (first + last) / 2 in descending positions
    half_sum = ((r.first + r.last) * r.mask).sum(1, dtype=torch.int64).to(torch.float64) / 2
    u = n_in * (p + 1) - half_sum - n_in * (n_in + 1) / 2
    return u / (n_in * (p - n_in))


def _finish(mass: Tensor, rank: Tensor, auc_: Tensor, topk: Tensor, flat_maps: Tensor, n_in: Tensor,
            on_constant: OnConstant) -> Scores:
    if on_constant not in ("nan", "score"):
        raise XiqaError(f"on_constant must be 'nan' or 'score', got {on_constant!r}")
    constant = constant_maps(flat_maps)
    empty = n_in == 0
    undefined = empty | constant if on_constant == "nan" else empty
    mass, rank, auc_, topk = (torch.where(undefined, math.nan, m) for m in (mass, rank, auc_, topk))
    auc_ = torch.where(n_in == flat_maps.shape[1], math.nan, auc_)  # no pixel outside the mask
    return Scores(mass, rank, auc_, topk, constant=constant, empty=empty)


def scores(maps: Tensor, masks: Tensor, *, topk_fraction: float = TOPK_FRACTION,
           on_constant: OnConstant = "nan") -> Scores:
    """All four metrics of ``maps`` [N, H, W] (real, finite) on ``masks`` bool [N, H, W], from one
    sort per map. To score M methods at once, stack their maps along N and repeat the masks."""
    fm, fk = _flatten(maps, masks)
    n_in = fk.sum(1).to(torch.float64)
    r = _rank(fm, fk)
    k = torch.full_like(n_in, topk_count(fm.shape[1], topk_fraction), dtype=torch.long)
    rank = r.expected_in_top(n_in.long()) / n_in
    topk = r.expected_in_top(k) / k
    return _finish(_mass(fm, fk), rank, _auc(r, n_in), topk, fm, n_in, on_constant)


def mass_accuracy(maps: Tensor, masks: Tensor, *, on_constant: OnConstant = "nan") -> Tensor:
    """Float64 [N]: Σ_{mask} a / Σ a (Quantus RelevanceMassAccuracy); NaN as in the module doc."""
    fm, fk = _flatten(maps, masks)
    nan = torch.full((fm.shape[0],), math.nan, dtype=torch.float64, device=fm.device)
    return _finish(_mass(fm, fk), nan, nan, nan, fm, fk.sum(1).to(torch.float64), on_constant).mass


def rank_accuracy(maps: Tensor, masks: Tensor, *, on_constant: OnConstant = "nan") -> Tensor:
    """Float64 [N]: fraction of the |mask| highest pixels inside the mask (Quantus
    RelevanceRankAccuracy; ties at the boundary by expectation)."""
    return scores(maps, masks, on_constant=on_constant).rank


def auc(maps: Tensor, masks: Tensor, *, on_constant: OnConstant = "nan") -> Tensor:
    """Float64 [N]: ROC AUC of map values vs mask, ties as average ranks (Quantus AUC / sklearn)."""
    return scores(maps, masks, on_constant=on_constant).auc


def topk_intersection(maps: Tensor, masks: Tensor, fraction: float = TOPK_FRACTION, *,
                      on_constant: OnConstant = "nan") -> Tensor:
    """Float64 [N]: fraction of the k = :func:`topk_count` (P, ``fraction``) highest pixels inside
    the mask (Quantus TopKIntersection with its pixel count k; ties at the boundary by expectation)."""
    return scores(maps, masks, topk_fraction=fraction, on_constant=on_constant).topk


def baselines(masks: Tensor, *, topk_fraction: float = TOPK_FRACTION,
              sigma: float = CENTRE_SIGMA) -> dict[str, Scores]:
    """The no-information baselines on ``masks`` bool [N, H, W]: ``{"uniform": Scores,
    "centre_gaussian": Scores}``, each map scored by :func:`scores` (the uniform map with
    ``on_constant="score"``: its ties broken by expectation give its no-information values)."""
    if masks.ndim != 3:
        raise XiqaError(f"masks must be [N, H, W], got shape {tuple(masks.shape)}")
    size = (masks.shape[1], masks.shape[2])
    out = {}
    for name, m in (("uniform", uniform_map(size, masks.device)),
                    ("centre_gaussian", centre_gaussian_map(size, sigma, masks.device))):
        out[name] = scores(m.expand(masks.shape), masks, topk_fraction=topk_fraction, on_constant="score")
    return out
