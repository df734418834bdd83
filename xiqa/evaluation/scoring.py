"""Score one model on a test split: every saliency method, smoothing off and on, Pointing Game.

:func:`score_split` is the science of the ``evaluate`` stage, without MLflow or DVC: it
explains every image that has at least one box (the only images the Pointing Game scores; the
others are skipped to save time, so the per-image table has rows only for scored images), once
without smoothing, smooths those maps with :func:`xiqa.saliency.smoothing` (rather than running
the saliency methods twice), and plays the Pointing Game on both. From the same maps (no extra
pass) it scores the localisation metrics of :mod:`xiqa.evaluation.localisation` (mass, rank,
AUC, top-k) on the boxes as a mask at input size, and their no-information baselines (uniform
and centre-Gaussian maps). It returns one row per image × method × smoothing flag
(:data:`xiqa.schema.PER_IMAGE_COLUMNS`), one row per scored image of the no-information
baselines (:data:`xiqa.schema.BASELINE_COLUMNS`) and, for a fixed
sample of images, the maps for the report's figures.

:func:`score_batch` is the core it shares with ``xiqa explain`` (:mod:`xiqa.evaluation.scan`):
one batch explained once, smoothed, its peaks found and the Pointing Game played.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from xiqa import schema as S
from xiqa.errors import XiqaError

if TYPE_CHECKING:
    from xiqa.evaluation.samples import SampleMaps


def figure_sample(scored_ids: Sequence[str], n: int, seed: int) -> list[str]:
    """A fixed, seeded sample of ``n`` scored image ids (sorted first, so the sample depends only
    on the set of ids and the seed: every model of a dataset gets the same images)."""
    ids = sorted(scored_ids)
    if n <= 0 or not ids:
        return []
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(ids), size=min(n, len(ids)), replace=False).tolist())
    return [ids[i] for i in pick]


@dataclass
class ScoreResult:
    """What :func:`score_split` found for one model: per-image rows, baselines, the figure sample."""
    per_image: pd.DataFrame  # PER_IMAGE_COLUMNS
    sample: SampleMaps | None  # the figure sample's maps, or None
    baselines: pd.DataFrame  # BASELINE_COLUMNS, one row per scored image
    # per multi-layer NormGrad method: layer maps skipped as constant, summed over the scored
    # images (the evaluation run's ``skipped_layers/<m>``, :func:`xiqa.schema.skipped_metric`)
    skipped_layers: dict[str, int] = field(default_factory=dict)
    # methods that cannot run on this model ({method: one sentence why}); they have no rows
    not_applicable: dict[str, str] = field(default_factory=dict)

    def baseline_accuracies(self) -> dict[str, float]:
        """``{baseline: mean over the scored images}`` (chance: expected accuracy)."""
        return {b: float(self.baselines[b].mean()) for b in S.BASELINES}

    def accuracies(self, smoothed: bool) -> dict[str, float]:
        """``{method: T / (T + F)}`` over the scored images."""
        rows = self.per_image[self.per_image["smoothed"] == int(smoothed)]
        return {m: float(g["hit"].mean()) for m, g in rows.groupby("method", sort=False)}

    def localisation(self, smoothed: bool) -> dict[str, dict[str, float]]:
        """``{metric: {method: mean}}`` of :data:`xiqa.schema.LOC_METRICS` over the scored
        images whose map is not constant (NaN rows left out); a method with no such image is
        absent from its metric's dict."""
        rows = self.per_image[self.per_image["smoothed"] == int(smoothed)]
        out: dict[str, dict[str, float]] = {k: {} for k in S.LOC_METRICS}
        for m, g in rows.groupby("method", sort=False):
            for k in S.LOC_METRICS:
                values = g[k].dropna()
                if len(values):
                    out[k][m] = float(values.mean())
        return out

    def localisation_baselines(self) -> dict[str, dict[str, float]]:
        """``{metric: {baseline: mean over the scored images}}`` for the uniform and centre-Gaussian maps."""
        return {k: {b: float(self.baselines[f"{b}_{k}"].mean()) for b in S.LOC_BASELINES} for k in S.LOC_METRICS}

    def constant_maps(self, smoothed: bool) -> dict[str, int]:
        """``{method: number of scored images whose map is constant}``."""
        rows = self.per_image[self.per_image["smoothed"] == int(smoothed)]
        return {m: int(g["constant"].sum()) for m, g in rows.groupby("method", sort=False)}


@dataclass
class BatchScores:
    """One batch explained once and scored by the Pointing Game (:func:`score_batch`), on the CPU.

    Per smoothing flag and method: ``maps`` float32 ``[B, H, W]`` in [0, 1], ``peaks`` long
    ``[B, 2]`` (x, y), ``hits`` float ``[B]`` (1 hit, 0 miss, NaN for an image without boxes;
    a constant map is a miss) and ``constant`` bool ``[B]``."""

    logits: torch.Tensor  # float32 [B, K]
    target: torch.Tensor  # long [B]: the class each map explains
    maps: dict[bool, dict[str, torch.Tensor]]
    peaks: dict[bool, dict[str, torch.Tensor]]
    hits: dict[bool, dict[str, torch.Tensor]]
    constant: dict[bool, dict[str, torch.Tensor]]
    # per multi-layer NormGrad method: the layer maps skipped as constant, summed over the batch
    skipped_layers: dict[str, int]


def score_batch(
    model: nn.Module,
    arch: str,
    x: torch.Tensor,
    in_boxes: Sequence[torch.Tensor],
    methods: Sequence[str],
    *,
    tolerance: float,
    smoothing: Sequence[bool] = (False, True),
    smooth: Callable[[torch.Tensor], torch.Tensor] | None = None,
    target: torch.Tensor | None = None,
    layers: Mapping[str, Sequence[str]] | None = None,
) -> BatchScores:
    """The scoring core of :func:`score_split` (a test split) and ``xiqa explain`` (one scan):
    explain ``x`` (float ``[B, 3, S, S]`` on the model's device) with ``methods`` in one forward
    and two backward passes, then, for each flag of ``smoothing``, the maps as explained
    (``False``) or smoothed once with ``smooth`` (``True``; default :func:`xiqa.saliency.smooth`),
    their peaks and the Pointing Game against ``in_boxes`` (one long ``[K, 4]`` per image, input
    pixels, inclusive) at τ = ``tolerance`` input pixels. ``target``: long ``[B]``, the class
    each image is explained for; ``None``: its predicted class."""
    from xiqa import saliency
    from xiqa.evaluation import pointing_game as pg

    smooth = smooth or saliency.smooth
    info: dict[str, torch.Tensor] = {}
    raw = saliency.explain(model, x, list(methods), arch=arch, layers=layers, info=info, target=target)
    skipped = {key.split("/", 1)[1]: int(counts.sum()) for key, counts in info.items()
               if key.startswith("skipped_layers/")}
    out = BatchScores(info["logits"].float().cpu(), info["target"].cpu(), {}, {}, {}, {}, skipped)
    for smoothed in smoothing:
        maps = {m: raw[m].detach().float().cpu() for m in methods}
        if smoothed:
            maps = {m: smooth(v) for m, v in maps.items()}
        out.maps[smoothed] = maps
        out.hits[smoothed] = {m: pg.hits(v, in_boxes, tolerance=tolerance) for m, v in maps.items()}
        out.constant[smoothed] = {m: pg.is_constant(v) for m, v in maps.items()}
        out.peaks[smoothed] = {m: pg.peaks(v) for m, v in maps.items()}
    return out


def score_split(
    model: nn.Module,
    arch: str,
    split,
    boxes: Mapping[str, np.ndarray],
    *,
    methods: Sequence[str] | None = None,
    tolerance: float,
    target: str = "predicted",
    smooth: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 8,
    layers: Mapping[str, Sequence[str]] | None = None,
    sample_ids: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    topk_fraction: float = 0.05,
    centre_sigma: float = 0.25,
    positive: int = 1,
) -> ScoreResult:
    """Explain and score the images of ``split`` (:class:`xiqa.data.dataset.Split`) that have
    boxes (``boxes``: ``{image_id: [B, 4]}`` in original pixels).

    ``tolerance``: τ in input pixels (:meth:`xiqa.params.EvaluateParams.tau_px`).
    ``target``: ``"predicted"`` explains the arg-max class, ``"label"`` the true label.
    ``smooth``: maps ``[N, H, W]`` → smoothed maps (default: :func:`xiqa.saliency.smooth` at
    :data:`xiqa.schema.SMOOTH_SIGMA`, :data:`xiqa.schema.SMOOTH_KERNEL`). ``topk_fraction``,
    ``centre_sigma``: the localisation metrics' k (a fraction of the input's pixels) and the
    centre-Gaussian baseline's σ (a fraction of the side). ``positive``: the logit of label 1
    (the per-image ``probability``; with ``target="label"`` a two-class model is explained for
    ``positive`` where the label is 1, for the other logit where it is 0).
    Raises :class:`XiqaError` when no test image has a box.
    """
    from xiqa import saliency
    from xiqa.evaluation import localisation as loc
    from xiqa.evaluation import pointing_game as pg
    from xiqa.evaluation.samples import SampleMaps, to_uint8

    if target not in ("predicted", "label"):
        raise XiqaError(f"evaluate.target must be 'predicted' or 'label', got {target!r}")
    smooth = smooth or saliency.smooth
    index = [i for i, image_id in enumerate(split.ids) if len(boxes.get(image_id, ())) > 0]
    if not index:
        raise XiqaError(f"{split.dataset}: no image of the {split.split} split has a box, so the "
                        "Pointing Game has nothing to score")
    kept, refused = saliency.applicable(model, methods)
    methods = list(kept)
    model.eval()
    device = next(model.parameters()).device  # explain on the model's device, score on the CPU
    sample_pos = {image_id: k for k, image_id in enumerate(sample_ids)}
    s = split.image_size
    sample_images = np.zeros((len(sample_ids), s, s), dtype=np.uint8)
    sample_boxes: list[np.ndarray] = [np.zeros((0, 4))] * len(sample_ids)
    sample_maps = {b: np.zeros((len(sample_ids), len(methods), s, s), dtype=np.uint8) for b in (False, True)}
    sample_peaks = {b: np.zeros((len(sample_ids), len(methods), 2)) for b in (False, True)}
    sample_hits = {b: np.full((len(sample_ids), len(methods)), np.nan) for b in (False, True)}

    columns: dict[str, list] = {c: [] for c in S.PER_IMAGE_COLUMNS}
    base: dict[str, list] = {c: [] for c in S.BASELINE_COLUMNS}
    skipped: dict[str, int] = {}
    for start in range(0, len(index), batch_size):
        rows = index[start:start + batch_size]
        x = split.inputs(torch.tensor(rows)).to(device)
        ids = [split.ids[i] for i in rows]
        labels = split.labels[rows]
        sizes = split.sizes[rows]  # (width, height)
        in_boxes = [pg.scale_boxes(boxes[i], (int(w), int(h)), (s, s))
                    for i, (w, h) in zip(ids, sizes.tolist(), strict=True)]
        scored = score_batch(model, arch, x, in_boxes, methods, tolerance=tolerance, smooth=smooth, layers=layers,
                             target=None if target == "predicted" else
                             torch.where(labels == 1, positive, 1 - positive).to(device))
        probs = torch.softmax(scored.logits, dim=1)
        predicted = scored.logits.argmax(dim=1)  # the class explained when target is "predicted"
        tgt = scored.target
        for method, count in scored.skipped_layers.items():
            skipped[method] = skipped.get(method, 0) + count
        base["image_id"] += ids
        base["chance"] += pg.chance_hits(in_boxes, (s, s), tolerance).tolist()
        base["centre"] += [int(h) for h in pg.centre_hits(in_boxes, (s, s), tolerance).tolist()]
        masks = loc.box_masks(in_boxes, (s, s))
        for b, score in loc.baselines(masks, topk_fraction=topk_fraction, sigma=centre_sigma).items():
            for k, v in score.as_dict().items():
                base[f"{b}_{k}"] += v.tolist()
        for smoothed in (False, True):
            batch_maps = scored.maps[smoothed]
            # every method's maps in one call: [M * B, H, W] against the masks repeated M times
            located = loc.scores(torch.cat([batch_maps[m] for m in methods]), masks.repeat(len(methods), 1, 1),
                                 topk_fraction=topk_fraction).as_dict()
            for mi, m in enumerate(methods):
                maps = batch_maps[m]
                part = slice(mi * len(rows), (mi + 1) * len(rows))
                for k in S.LOC_METRICS:
                    columns[k] += located[k][part].tolist()
                hit = scored.hits[smoothed][m]
                constant = scored.constant[smoothed][m]
                peak = scored.peaks[smoothed][m]
                for j, image_id in enumerate(ids):
                    columns["image_id"].append(image_id)
                    columns["method"].append(m)
                    columns["smoothed"].append(int(smoothed))
                    columns["target"].append(int(tgt[j]))
                    columns["predicted"].append(int(predicted[j]))
                    columns["probability"].append(float(probs[j, positive]))
                    columns["label"].append(int(labels[j]))
                    columns["peak_x"].append(int(peak[j, 0]))
                    columns["peak_y"].append(int(peak[j, 1]))
                    columns["hit"].append(int(hit[j]))
                    columns["constant"].append(int(constant[j]))
                    pos = sample_pos.get(image_id)
                    if pos is not None:
                        sample_maps[smoothed][pos, mi] = to_uint8(maps[j].numpy())
                        sample_peaks[smoothed][pos, mi] = peak[j].numpy()
                        sample_hits[smoothed][pos, mi] = float(hit[j])
        for j, image_id in enumerate(ids):
            pos = sample_pos.get(image_id)
            if pos is not None:
                sample_images[pos] = split.images[rows[j], 0].numpy()
                sample_boxes[pos] = np.asarray(in_boxes[j], dtype=np.float64).reshape(-1, 4)
        if progress is not None:
            progress(len(rows))
    frame = pd.DataFrame(columns)
    sample = None
    if len(sample_ids):
        missing = [i for i in sample_ids if i not in set(frame["image_id"])]
        if missing:
            raise XiqaError(f"figure sample image(s) {missing} were not scored (they have no box)")
        sample = SampleMaps(list(sample_ids), methods, sample_images, sample_boxes,
                            sample_maps, sample_peaks, sample_hits)
    return ScoreResult(frame, sample, pd.DataFrame(base, columns=list(S.BASELINE_COLUMNS)), skipped, refused)
