"""The training loop (SPEC 3): SGD with momentum, step schedule, cross-entropy, augmentation of
whole batches on the model's device, optional mixed precision, best epoch by validation
accuracy. No MLflow here: each epoch is reported to a callback.

Seeding: :func:`seed_everything` seeds torch (model init) and turns on deterministic
algorithms; the batch order and the augmentation draws come from two ``torch.Generator`` s
seeded from the same seed. On CPU two runs with the same seed give bit-identical weights.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from xiqa.data.dataset import Split, batches
from xiqa.data.transforms import augment, standardise
from xiqa.errors import XiqaError
from xiqa.params import Recipe
from xiqa.training.metrics import classification_accuracy, roc_auc

if TYPE_CHECKING:
    from rich.progress import Progress


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's record: ``epoch`` (counting from 1) and the metrics logged with it as step."""

    epoch: int

    def metrics(self) -> dict[str, float]:
        """The per-epoch metrics as logged (``epoch`` is the step)."""
        return {k: v for k, v in asdict(self).items() if k != "epoch"}


@dataclass(frozen=True)
class EpochLog(EpochRecord):
    """What one training epoch reports."""

    train_loss: float
    val_accuracy: float
    val_auc: float
    lr: float
    epoch_seconds: float
    images_per_second: float


@dataclass
class TrainResult:
    """The kept epoch (best validation accuracy, then AUC, then the earliest) and all epochs."""

    best_epoch: int
    val_accuracy: float
    val_auc: float
    history: list[EpochLog] = field(default_factory=list)


@dataclass(frozen=True)
class Scores:
    """A model on one split: ``probabilities`` float64 ``[N]`` of class 1."""

    accuracy: float
    auc: float
    probabilities: np.ndarray


def resolve_device(device: str) -> torch.device:
    """``cpu`` or ``cuda[:i]``; asking for CUDA without one is a :class:`XiqaError`."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise XiqaError(f"device {device!r} requested but no CUDA device is available "
                        "(set `device: cpu` in params.yaml or pass --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise XiqaError(f"device must be cpu or cuda, got {device!r}")
    return dev


def seed_everything(seed: int, device: torch.device | str = "cpu") -> None:
    """Seed torch, numpy and random; deterministic kernels (warn only where none exists)."""
    import random

    if torch.device(device).type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 32,
            device: torch.device | str = "cpu") -> np.ndarray:
    """Class-1 probabilities float64 ``[N]`` of uint8 ``images [N, 1, S, S]`` (eval mode)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = standardise(images[start:start + batch_size].to(device, non_blocking=True))
        out.append(torch.softmax(model(x).float(), dim=1)[:, 1].double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def score(model: nn.Module, split: Split, batch_size: int = 32,
          device: torch.device | str = "cpu") -> Scores:
    """Accuracy (threshold 0.5, i.e. the arg-max of two classes) and ROC AUC on ``split``."""
    probs = predict(model, split.images, batch_size, device)
    labels = split.labels.numpy()
    return Scores(classification_accuracy(labels, probs > 0.5), roc_auc(labels, probs), probs)


def _better(candidate: tuple[float, float], best: tuple[float, float] | None) -> bool:
    def key(pair: tuple[float, float]) -> tuple[float, float]:
        return tuple(-math.inf if math.isnan(v) else v for v in pair)  # type: ignore[return-value]

    return best is None or key(candidate) > key(best)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None``: fp32, no autocast); fp16 on
    a CPU is a :class:`XiqaError` (no gradient scaler there, and no speed-up)."""
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise XiqaError("train.<dataset>.precision: fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if precision not in ("bf16", "fp16"):
        raise XiqaError(f"train.<dataset>.precision must be fp32, bf16 or fp16, got {precision!r}")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def amp_tools(amp: torch.dtype | None, device: torch.device) -> tuple[Callable[[], Any], Any]:
    """``(autocast, scaler)`` for the autocast dtype ``amp`` (``autocast_dtype``): a factory of
    the forward's autocast context (a no-op for fp32) and, for fp16, a gradient scaler."""
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else nullcontext
    return autocast, scaler


def optimiser_step(model: nn.Module, loss_fn: nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor,
                   y: torch.Tensor, autocast: Callable[[], Any], scaler: Any) -> torch.Tensor:
    """One training step on the batch ``(x, y)``: forward under ``autocast``, backward (scaled
    when ``scaler`` is a gradient scaler) and the optimiser's step; returns the loss."""
    optimiser.zero_grad(set_to_none=True)
    with autocast():
        loss = loss_fn(model(x), y)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
    else:
        loss.backward()
        optimiser.step()
    return loss


def lr_schedule(optimiser: torch.optim.Optimizer, recipe: Recipe,
                steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning rate per optimiser step (stepped after every batch): a linear warm-up from
    lr / 10 over ``recipe.warmup_epochs``, then ``step`` (× gamma every ``step_size`` epochs;
    constant when ``step_size`` is None, the paper's LVOT recipe) or ``cosine`` (half a cosine
    to 0 at the last step)."""
    from torch.optim.lr_scheduler import LambdaLR

    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    total = max(recipe.epochs * steps_per_epoch, 1)

    def factor(step: int) -> float:
        ramp = 0.1 + 0.9 * step / warmup if step < warmup else 1.0
        if recipe.schedule == "cosine":
            after = max(step - warmup, 0) / max(total - warmup, 1)
            return ramp * 0.5 * (1 + math.cos(math.pi * min(after, 1.0)))
        return ramp * (recipe.gamma ** (step // (recipe.step_size * steps_per_epoch)) if recipe.step_size else 1.0)

    return LambdaLR(optimiser, factor)


def stream_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for random stream ``stream`` of run ``seed`` (NumPy's
    SeedSequence), so the batch order and the augmentation draws do not share one stream."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0] >> 1)


def train(model: nn.Module, train_split: Split, val_split: Split, recipe: Recipe, *, seed: int,
          device: str = "cpu", on_epoch: Callable[[EpochLog], object] | None = None,
          progress: bool = True) -> TrainResult:
    """Train ``model`` in place with ``recipe`` and leave it holding the kept epoch's weights,
    in eval mode on ``device``. ``on_epoch`` receives each :class:`EpochLog` as it ends.

    The caller builds ``model`` after :func:`seed_everything` (so its initialisation is seeded
    too); this function re-seeds the augmentation draws and the batch order with ``seed``.
    """
    dev = resolve_device(device)
    seed_everything(seed, dev)
    layout = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model.to(dev).to(memory_format=layout)
    amp = autocast_dtype(recipe.precision, dev)
    optimiser = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    order = torch.Generator().manual_seed(seed)
    draws = torch.Generator().manual_seed(stream_seed(seed, 1)) if recipe.augment else None
    loader = batches(train_split, recipe.batch_size, shuffle=True, generator=order,
                     num_workers=recipe.num_workers, drop_singleton=True,
                     pin_memory=dev.type == "cuda")
    schedule = lr_schedule(optimiser, recipe, steps_per_epoch=max(1, len(loader)))
    loss_fn = nn.CrossEntropyLoss()
    # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range
    autocast, scaler = amp_tools(amp, dev)
    result = TrainResult(best_epoch=0, val_accuracy=float("nan"), val_auc=float("nan"))
    best_state: dict[str, torch.Tensor] | None = None
    bar = _EpochBar(recipe.epochs, len(loader), enabled=progress)
    with bar:
        for epoch in range(1, recipe.epochs + 1):
            model.train()
            start, total, seen = time.perf_counter(), 0.0, 0
            lr = optimiser.param_groups[0]["lr"]
            bar.start(epoch)
            for images, labels in loader:
                images = images.to(dev, non_blocking=True)
                if draws is not None:
                    images = augment(images, draws)
                x = standardise(images).contiguous(memory_format=layout)
                y = labels.to(dev, non_blocking=True)
                loss = optimiser_step(model, loss_fn, optimiser, x, y, autocast, scaler).item()
                if not math.isfinite(loss):  # stop at once: nothing after it can be kept
                    raise XiqaError(f"training diverged at epoch {epoch}, step {seen // recipe.batch_size + 1} "
                                    f"(train loss {loss}); lower the learning rate "
                                    f"(train.{train_split.dataset}.lr, now {recipe.lr:g})")
                total += loss * len(y)
                seen += len(y)
                schedule.step()
                bar.advance(total / seen)
            train_loss = total / max(seen, 1)
            seconds = time.perf_counter() - start
            recalibrate_batchnorm(model, train_split, recipe.bn_recalibration, recipe.batch_size, dev)
            val = score(model, val_split, recipe.batch_size, dev)
            log = EpochLog(epoch, train_loss, val.accuracy, val.auc, lr,
                           time.perf_counter() - start, seen / seconds)
            result.history.append(log)
            bar.finish(log)
            if _better((val.accuracy, val.auc), None if best_state is None
                       else (result.val_accuracy, result.val_auc)):
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                result.best_epoch, result.val_accuracy, result.val_auc = epoch, val.accuracy, val.auc
            if on_epoch is not None:
                on_epoch(log)
    if best_state is None:  # params validation keeps epochs >= 1; a direct caller may not
        raise ValueError(f"train: recipe.epochs is {recipe.epochs}, so no epoch ran and there is no model to keep")
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)  # what registry, saliency and tests expect
    model.eval()
    return result


def recalibrate_batchnorm(model: nn.Module, split: Split, n: int, batch_size: int,
                          device: torch.device | str = "cpu") -> None:
    """Replace every BatchNorm's running statistics by their plain average over the first ``n``
    images of ``split`` (no augmentation), computed with the current weights.

    After a few hundred steps from scratch the running averages (momentum 0.1) still lag weights
    that change fast, so eval mode can sit far from train mode: the demo's EfficientNet-B0 ranked
    its validation images perfectly (AUC 1.0) at accuracy 0.5. ``n`` = 0 leaves them alone.
    """
    from xiqa.models import estimate_bn_statistics

    if n <= 0:
        return
    images = split.images[:n]
    estimate_bn_statistics(model, [standardise(images[i:i + batch_size].to(device))
                                   for i in range(0, len(images), batch_size)])


class _EpochBar:
    """One rich progress bar per epoch on stderr (loss while training, then val metrics)."""

    def __init__(self, epochs: int, steps: int, enabled: bool) -> None:
        self.epochs, self.steps, self.enabled = epochs, steps, enabled
        self.progress: Progress | None = None
        self.task: Any = None  # rich TaskID of the current epoch

    def __enter__(self) -> _EpochBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("{task.fields[info]}"),
                                     console=Console(stderr=True), refresh_per_second=4)
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start(self, epoch: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=self.steps,
                                               info="")

    def advance(self, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, info=f"loss {loss:.4f}")

    def finish(self, log: EpochLog) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=self.steps,
                                 info=f"loss {log.train_loss:.4f}  val acc {log.val_accuracy:.3f}  "
                                      f"val auc {log.val_auc:.3f}")
