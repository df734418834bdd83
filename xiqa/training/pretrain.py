"""The stand-in start (SPEC 3): pre-train an architecture's backbone on a pretext that carries
neither task's labels, for when no ImageNet weights can be had offline. No MLflow here.

Two routes (``pretrain.route``):

- ``fractal``: classify FractalDB-style images, one class per random iterated function system
  (:mod:`xiqa.data.fractals`; Kataoka et al. 2020). Formula-driven: no scan at all.
- ``rotation``: self-supervised, predict which of four rotations (0°, 90°, 180°, 270°) a scan
  was turned by (Gidaris et al., ICLR 2018), on the unlabelled *training* split of each dataset
  given; no label, no validation or test scan.

Both train the whole network with SGD (Nesterov momentum 0.9), a linear warm-up over the first
epoch and a cosine decay to zero, at ``pretrain.image_size``, with the same input normalisation
as the classifiers (grayscale copied to three channels, ImageNet mean/std). The result is a
torchvision-format state dict whose head is the pretext's; the fine-tuning start drops the head
as it drops ImageNet's 1000-way one (:func:`xiqa.models.init.load_imagenet_backbone`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xiqa.data.transforms import standardise
from xiqa.errors import XiqaError
from xiqa.params import PretrainParams
from xiqa.training.loop import EpochRecord, stream_seed


@dataclass(frozen=True)
class PretextEpoch(EpochRecord):
    """One epoch of the pretext."""

    pretext_loss: float
    pretext_accuracy: float
    lr: float
    epoch_seconds: float
    images_per_second: float


@dataclass(frozen=True)
class PretextData:
    """The pretext's training set: uint8 ``images [N, 1, S, S]`` and, for the supervised
    fractal route, int64 ``labels [N]`` of ``classes`` classes (``None``: rotation labels are
    drawn per batch)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: int
    seconds: float  # to render or gather


def fractal_data(p: PretrainParams) -> PretextData:
    """``p.classes`` × ``p.per_class`` fractal images at ``p.image_size``, seeded by ``p.seed``."""
    import numpy as np

    from xiqa.data.fractals import fractal_dataset

    start = time.perf_counter()
    images, labels = fractal_dataset(p.classes, p.per_class, p.image_size, p.seed)
    return PretextData(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)),
                       p.classes, time.perf_counter() - start)


def rotation_data(scans: Sequence[torch.Tensor], image_size: int) -> PretextData:
    """Unlabelled uint8 scans ``[N_i, 1, S_i, S_i]`` (training splits only), resized to
    ``image_size`` and pooled, for the four-way rotation pretext."""
    start = time.perf_counter()
    if not scans or not sum(len(s) for s in scans):
        raise XiqaError("pretrain: the rotation route found no training scans")
    pooled = torch.cat([F.interpolate(s.float(), size=(image_size, image_size), mode="bilinear",
                                      align_corners=False, antialias=True).round_().clamp_(0, 255)
                        .to(torch.uint8) for s in scans])
    return PretextData(pooled, None, 4, time.perf_counter() - start)


def _rotate(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image turned by its own random multiple of 90°; returns (images, the multiples)."""
    k = torch.randint(0, 4, (len(images),), generator=generator)
    turned = torch.empty_like(images)
    for quarter in range(4):
        sel = k == quarter
        turned[sel] = torch.rot90(images[sel], quarter, dims=(-2, -1))
    return turned, k


def pretrain(model: nn.Module, data: PretextData, p: PretrainParams, *,
             on_epoch: Callable[[PretextEpoch], object] | None = None,
             device: torch.device | str = "cpu") -> list[PretextEpoch]:
    """Train ``model`` (its head already ``data.classes``-way) on the pretext in place; returns
    the epochs. A non-finite loss stops with a :class:`XiqaError` at the step it appears."""
    n = len(data.images)
    batch = min(p.batch_size, n)
    steps_per_epoch = n // batch
    total = steps_per_epoch * p.epochs
    order = torch.Generator().manual_seed(stream_seed(p.seed, 10))
    turns = torch.Generator().manual_seed(stream_seed(p.seed, 11))
    optimiser = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, nesterov=True,
                                weight_decay=p.weight_decay)
    model.to(device).train()
    history, step = [], 0
    for epoch in range(1, p.epochs + 1):
        start, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        perm = torch.randperm(n, generator=order)
        for b in range(steps_per_epoch):
            idx = perm[b * batch:(b + 1) * batch]
            images = data.images[idx]
            if data.labels is None:
                images, y = _rotate(images, turns)
            else:
                y = data.labels[idx]
            lr = p.lr * min(1.0, (step + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * step / total))
            for group in optimiser.param_groups:
                group["lr"] = lr
            x, y = standardise(images.to(device)), y.to(device)
            optimiser.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise XiqaError(f"pretrain diverged at epoch {epoch}, step {b + 1} (pretext loss "
                                f"{loss.item()}); lower pretrain.lr (now {p.lr})")
            loss.backward()
            optimiser.step()
            step += 1
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        seconds = time.perf_counter() - start
        log = PretextEpoch(epoch, loss_sum / seen, correct / seen, lr, seconds, seen / seconds)
        history.append(log)
        if on_epoch is not None:
            on_epoch(log)
    model.eval()
    return history
