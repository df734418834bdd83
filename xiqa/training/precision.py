"""``train.<dataset>.precision: auto``: bf16 autocast only where the machine has the instructions
for it and a short probe of the actual model at the actual batch shape shows that it is faster.

- CUDA: bf16 when the device supports it (``torch.cuda.is_bf16_supported``), else fp32.
- CPU: bf16 needs AMX-BF16 or AVX512-BF16 (x86 ``flags`` of ``/proc/cpuinfo``; ``bf16`` in an
  aarch64 ``Features`` line). Without them, or when the flags cannot be read, fp32: nothing is
  assumed. With them, a few training steps (forward + backward) of a copy of the model on a
  synthetic batch of the real shape, fp32 and bf16 alternating; bf16 is kept only when its median
  step is at least :data:`MIN_SPEED_UP` times faster (a shared machine's noise must not decide).

The probe touches neither the model (it trains a deep copy) nor the global random state (it runs
inside ``torch.random.fork_rng``), so a run that resolves ``auto`` to fp32 is bit-identical to a
run that asked for fp32.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

# the instructions that make bf16 arithmetic native on a CPU (names as /proc/cpuinfo spells them)
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
# bf16 step time x this must be <= the fp32 step time. On a 2-core AVX512-BF16 CPU (no AMX) at load
# 10-13, repeated 3-step probes of ResNet-50 at 8 x 112 px read 1.20x, 0.87x and 1.62x, of ResNet-34
# at 8 x 128 px 0.95x, 1.27x and 1.28x: a smaller margin lets noise decide, and even this one does
# not make the choice repeatable on a machine that busy (the choice is logged with its timings)
MIN_SPEED_UP = 1.3
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class PrecisionChoice:
    """The resolved precision (``fp32``, ``bf16`` or ``fp16``), what was asked for, why, and the
    probe's median seconds per training step by precision (empty when nothing was probed)."""

    precision: str
    requested: str
    reason: str
    probe_seconds: dict[str, float] = field(default_factory=dict)

    def params(self) -> dict[str, str | float]:
        """What a training run logs: ``precision`` (the resolved one), ``precision_requested``,
        ``precision_reason`` and ``precision_probe_<p>_s`` (seconds per step) per probed ``p``."""
        out: dict[str, str | float] = {"precision": self.precision, "precision_requested": self.requested,
                                       "precision_reason": self.reason}
        out.update({f"precision_probe_{p}_s": round(s, 5) for p, s in self.probe_seconds.items()})
        return out


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags: the first ``flags`` (x86) or ``Features`` (aarch64) line of
    ``cpuinfo`` (default: ``/proc/cpuinfo``); empty when there is none or it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def bf16_instructions(flags: frozenset[str]) -> tuple[str, ...]:
    """Which of :data:`BF16_CPU_FLAGS` ``flags`` holds (empty: bf16 would be emulated)."""
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


def probe(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str,
          precisions: tuple[str, ...] = ("fp32", "bf16"), steps: int = 3, channels_last: bool = False,
          n_classes: int = 2) -> dict[str, float]:
    """Median wall-clock seconds of one training step (zero grad, forward under autocast,
    cross-entropy, backward) of a copy of ``model`` in train mode on a synthetic float32 batch of
    ``input_shape`` ``[N, C, H, W]`` (N at least 2), per precision of ``precisions`` (``fp32``, ``bf16``,
    ``fp16``). One warm-up step each (kernel selection), then ``steps`` rounds alternating the
    precisions so that load from other processes hits them alike. ``model`` and the global RNG
    state are left as they were."""
    dev = torch.device(device)
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    layout = torch.channels_last if channels_last else torch.contiguous_format
    times: dict[str, list[float]] = {p: [] for p in precisions}
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    shape = (max(2, input_shape[0]), *input_shape[1:])  # as training, which drops a batch of one
    with torch.random.fork_rng(devices=cuda):
        net = copy.deepcopy(model).to(dev).to(memory_format=layout).train()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g).to(dev).contiguous(memory_format=layout)
        y = (torch.arange(shape[0]) % n_classes).to(dev)
        loss_fn = nn.CrossEntropyLoss()

        def step(precision: str) -> float:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            net.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=dtypes[precision], enabled=dtypes[precision] is not None):
                loss = loss_fn(net(x), y)
            loss.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return time.perf_counter() - start

        for p in precisions:
            step(p)
        for _ in range(steps):
            for p in precisions:
                times[p].append(step(p))
    return {p: statistics.median(t) for p, t in times.items()}


def choose_precision(requested: str, model: nn.Module, input_shape: tuple[int, ...],
                     device: torch.device | str, *, channels_last: bool = False, steps: int = 3,
                     flags: frozenset[str] | None = None) -> PrecisionChoice:
    """Resolve ``train.<dataset>.precision``: ``fp32``, ``bf16`` and ``fp16`` are returned as
    asked; ``auto`` as the module docstring says. ``model`` is the model about to be trained (it
    is copied, not changed), ``input_shape`` its training batch ``[batch_size, 3, S, S]``;
    ``flags`` replaces the CPU flags read from ``/proc/cpuinfo`` (tests)."""
    if requested != "auto":
        return PrecisionChoice(requested, requested, "set in params")
    dev = torch.device(device)
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", "auto", f"CUDA device {torch.cuda.get_device_name(dev)} supports bf16")
        return PrecisionChoice("fp32", "auto", f"CUDA device {torch.cuda.get_device_name(dev)} lacks bf16")
    have = bf16_instructions(cpu_flags() if flags is None else flags)
    capability = torch.backends.cpu.get_cpu_capability()
    if not have:
        return PrecisionChoice("fp32", "auto", f"CPU without AMX-BF16 / AVX512-BF16 (torch kernels: {capability})")
    seconds = probe(model, input_shape, dev, ("fp32", "bf16"), steps, channels_last)
    speed_up = seconds["fp32"] / seconds["bf16"]
    verdict = "faster" if speed_up >= MIN_SPEED_UP else f"not {MIN_SPEED_UP:g}x faster"
    reason = (f"CPU has {', '.join(have)} (torch kernels: {capability}); probe of {steps} steps at "
              f"{list(input_shape)}: bf16 {speed_up:.2f}x fp32's speed, {verdict}")
    return PrecisionChoice("bf16" if speed_up >= MIN_SPEED_UP else "fp32", "auto", reason, seconds)
