"""Sanity checks of saliency maps (SPEC 6.1): model-parameter randomisation and random logit.

**Model-parameter randomisation test** (MPRT, Adebayo et al. 2018, "Sanity checks for saliency
maps"): :func:`randomise_cascade` re-initialises a deep copy of a trained model block by block
from the logits down (:data:`xiqa.models.zoo.CASCADES`: ResNet ``fc``, ``layer4`` … ``layer1``,
``conv1``+``bn1``; EfficientNet-B0 the classifier, the head conv, the seven stages, the stem),
cumulatively, with the FR rule of :func:`xiqa.models.init.reinitialise` (He normal conv / linear
weights, zero biases, BatchNorm weight 1, bias 0, running statistics reset) drawn from one
generator seeded with ``seed``. The trained model is never touched. :func:`mprt` explains the
trained model's predicted class at every step with one :func:`xiqa.saliency.explain` call for all
methods and compares each map with the trained model's map of the same image and method.

**Random-logit check** (Quantus ``RandomLogit``): :func:`random_logit` compares the map for the
predicted class with the map for another class (with two classes, the other one).

Similarities (:func:`spearman`, :func:`ssim`), per image, float64:

- Spearman rank correlation of the absolute maps (ties at their average rank, as
  ``scipy.stats.spearmanr``);
- SSIM of the absolute maps, ``skimage.metrics.structural_similarity`` with Quantus' settings
  (``quantus.functions.similarity_func.ssim``: 7 × 7 uniform window, ``data_range`` = max − min
  of the two maps together), on the 2-D maps (Quantus' MPRT and RandomLogit flatten the maps
  first, which turns SSIM into a 1-D SSIM across row ends; docs/DEVIATIONS.md).

A method passes when its similarity falls as the model is destroyed. A pair in which either map
is constant (:func:`xiqa.saliency.methods.constant_maps`; e.g. a randomised EfficientNet in eval
mode, SPEC 10) has no similarity: NaN, and ``constant`` = True in the row, so it is counted,
never silently scored.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from xiqa.errors import XiqaError
from xiqa.evaluation.localisation import average_ranks
from xiqa.models.init import reinitialise
from xiqa.models.zoo import cascade, get_module
from xiqa.saliency import check_methods, explain
from xiqa.saliency.methods import constant_maps

__all__ = ["MPRT_COLUMNS", "RANDOM_LOGIT_COLUMNS", "metric_histories", "mprt", "random_logit",
           "randomise_cascade", "spearman", "ssim", "step_means"]

MPRT_COLUMNS = ("step", "block", "method", "image", "spearman", "ssim", "constant")
RANDOM_LOGIT_COLUMNS = ("image", "method", "target", "other", "ssim", "constant")
ORIGINAL = "original"  # the label of step 0: the trained model itself


# --------------------------------------------------------------------------- similarity
def _pairs(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if a.ndim != 3 or a.shape != b.shape:
        raise XiqaError(f"maps to compare must both be [N, H, W], got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.abs(), b.abs(), (constant_maps(a) | constant_maps(b)).cpu()


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Float64 [N] (CPU): Spearman rank correlation of ``|a[n]|`` and ``|b[n]|`` (maps [N, H, W]); NaN
    where either map is constant."""
    a, b, const = _pairs(a, b)
    ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    r = (ra * rb).sum(1) / torch.sqrt(ra.square().sum(1) * rb.square().sum(1))
    return torch.where(const, math.nan, r)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Float64 [N] (CPU): SSIM of ``|a[n]|`` and ``|b[n]|`` (maps [N, H, W], at least 7 × 7), with
    Quantus' settings (module doc); NaN where either map is constant."""
    from skimage.metrics import structural_similarity

    a, b, const = _pairs(a, b)
    if min(a.shape[1:]) < 7:
        raise XiqaError(f"SSIM needs maps of at least 7 x 7 pixels, got {tuple(a.shape[1:])}")
    x = a.detach().to("cpu", torch.float64).numpy()
    y = b.detach().to("cpu", torch.float64).numpy()
    out = torch.full((len(x),), math.nan, dtype=torch.float64)
    for n in np.flatnonzero(~const.numpy()):
        both = np.concatenate([x[n], y[n]])
        out[n] = structural_similarity(x[n], y[n], data_range=float(both.max() - both.min()))
    return out


# --------------------------------------------------------------------------- MPRT
def randomise_cascade(model: nn.Module, arch: str, seed: int) -> Iterator[tuple[int, str, nn.Module]]:
    """Yield ``(step, block, randomised)`` for step = 1 … L of :func:`xiqa.models.zoo.cascade`:
    ``randomised`` is a deep copy of ``model`` (eval mode) whose blocks 1 … step are re-initialised.

    It is one copy, randomised further at each step: use it before asking for the next step.
    ``block`` names the step's modules joined by ``+`` (``fc``, ``conv1+bn1``). Deterministic in
    ``seed``; ``model`` is left untouched.
    """
    steps = cascade(arch)
    work = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(seed)
    for step, names in enumerate(steps, start=1):
        for name in names:
            try:
                reinitialise(get_module(work, name), generator)
            except TypeError as err:  # e.g. ConvNeXt's layer_scale: no FR rule for it
                raise XiqaError(f"MPRT cannot randomise {name!r} of {arch}: {err}") from None
        yield step, "+".join(names), work


def _explain_batches(model: nn.Module, images: Tensor, methods: Sequence[str], arch: str,
                     target: Tensor | None, layers: Mapping[str, Sequence[str]] | None,
                     batch_size: int | None, info: dict | None = None) -> dict[str, Tensor]:
    """explain() over ``images`` in chunks of ``batch_size`` (None: one call), maps concatenated;
    ``info`` gets ``target`` long [N] and ``classes``."""
    step = batch_size or len(images)
    parts: list[dict[str, Tensor]] = []
    targets = []
    for start in range(0, len(images), step):
        part_info: dict = {}
        t = None if target is None else target[start:start + step]
        parts.append(explain(model, images[start:start + step], methods, arch=arch, target=t,
                             layers=layers, info=part_info))
        targets.append(part_info["target"])
    if info is not None:
        info["target"] = torch.cat(targets)
        info["classes"] = int(part_info["logits"].shape[1])
    return {m: torch.cat([p[m] for p in parts]) for m in methods}


def _rows(step: int, block: str, trained: Mapping[str, Tensor], maps: Mapping[str, Tensor]) -> pd.DataFrame:
    frames = []
    for method, ref in trained.items():
        const = (constant_maps(ref) | constant_maps(maps[method])).cpu()
        frames.append(pd.DataFrame({
            "step": step, "block": block, "method": method, "image": np.arange(len(ref)),
            "spearman": spearman(ref, maps[method]).numpy(), "ssim": ssim(ref, maps[method]).numpy(),
            "constant": const.numpy()}))
    return pd.concat(frames, ignore_index=True)


def mprt(model: nn.Module, images: Tensor, arch: str, *, seed: int, methods: Sequence[str] | None = None,
         layers: Mapping[str, Sequence[str]] | None = None, batch_size: int | None = None) -> pd.DataFrame:
    """The model-parameter randomisation test of ``model`` (an ``arch`` classifier, trained) on
    ``images`` [N, 3, H, W] (a fixed sample, normalised, on the model's device).

    Explains the trained model (an eval-mode copy) for its predicted class, then, at every step
    of :func:`randomise_cascade` (``seed``), the randomised copy for the *same* classes, with one
    :func:`xiqa.saliency.explain` call per step for all ``methods`` (default all ten; in chunks
    of ``batch_size`` images if given). ``layers``: explain's layer overrides.

    Returns one row per step × method × image, columns :data:`MPRT_COLUMNS`: ``step`` (0 = the
    trained model compared with itself, label ``original``; 1 … L the cascade), ``block``,
    ``method``, ``image`` (position in ``images``), ``spearman`` and ``ssim`` (float64, NaN where
    a map is constant) and ``constant`` (bool).
    """
    methods = list(check_methods(methods))
    info: dict = {}
    trained_model = copy.deepcopy(model).eval()
    trained = _explain_batches(trained_model, images, methods, arch, None, layers, batch_size, info)
    del trained_model
    target = info["target"]
    frames = [_rows(0, ORIGINAL, trained, trained)]
    for step, block, randomised in randomise_cascade(model, arch, seed):
        maps = _explain_batches(randomised, images, methods, arch, target, layers, batch_size)
        frames.append(_rows(step, block, trained, maps))
    return pd.concat(frames, ignore_index=True)[list(MPRT_COLUMNS)]


def step_means(frame: pd.DataFrame) -> pd.DataFrame:
    """Per step × method of an :func:`mprt` frame: ``spearman`` and ``ssim`` means over the images
    with both maps non-constant, ``n`` (those images) and ``n_constant``; sorted by method, step."""
    grouped = frame.groupby(["method", "step", "block"], sort=True)
    out = grouped.agg(spearman=("spearman", "mean"), ssim=("ssim", "mean"),
                      n=("constant", lambda c: int((~c.astype(bool)).sum())),
                      n_constant=("constant", lambda c: int(c.astype(bool).sum())))
    return out.reset_index()


def metric_histories(frame: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    """MLflow metric histories of an :func:`mprt` frame: ``{"mprt_spearman/<method>": [(step,
    mean), ...], "mprt_ssim/<method>": ...}`` with step = randomised depth (0 = trained); a step
    whose maps were all constant has no point (its count is in :func:`step_means`)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in step_means(frame).itertuples(index=False):
        for sim in ("spearman", "ssim"):
            value = float(getattr(row, sim))
            if not math.isnan(value):
                out.setdefault(f"mprt_{sim}/{row.method}", []).append((int(row.step), value))
    return out


# --------------------------------------------------------------------------- random logit
def random_logit(model: nn.Module, images: Tensor, arch: str, *, seed: int = 0,
                 methods: Sequence[str] | None = None, layers: Mapping[str, Sequence[str]] | None = None,
                 batch_size: int | None = None) -> pd.DataFrame:
    """SSIM of each image's map for its predicted class against its map for another class
    (Quantus RandomLogit): with two classes the other one, with K > 2 one drawn uniformly from
    the K − 1 others with ``numpy.random.default_rng(seed)``. ``model`` is explained as an
    eval-mode copy; ``images`` [N, 3, H, W]. Two :func:`xiqa.saliency.explain` calls.

    Returns one row per image × method, columns :data:`RANDOM_LOGIT_COLUMNS`: ``image``,
    ``method``, ``target`` (predicted class), ``other``, ``ssim`` (float64, NaN where a map is
    constant) and ``constant`` (bool).
    """
    methods = list(check_methods(methods))
    work = copy.deepcopy(model).eval()
    info: dict = {}
    maps = _explain_batches(work, images, methods, arch, None, layers, batch_size, info)
    target = info["target"]
    classes = info["classes"]
    if classes < 2:
        raise XiqaError(f"the random-logit check needs at least two classes, the model has {classes}")
    draw = np.random.default_rng(seed).integers(0, classes - 1, size=len(target))
    other_np = draw + (draw >= target.cpu().numpy())  # skip the target class
    other = torch.as_tensor(other_np, dtype=torch.long, device=target.device)
    others = _explain_batches(work, images, methods, arch, other, layers, batch_size)
    frames = []
    for method in methods:
        frames.append(pd.DataFrame({
            "image": np.arange(len(target)), "method": method, "target": target.cpu().numpy(),
            "other": other_np, "ssim": ssim(maps[method], others[method]).numpy(),
            "constant": (constant_maps(maps[method]) | constant_maps(others[method])).cpu().numpy()}))
    return pd.concat(frames, ignore_index=True)[list(RANDOM_LOGIT_COLUMNS)]

