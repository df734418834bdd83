"""Helpers shared by the saliency tests (imported as a plain module: tests/ is no package)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from xiqa.models import layers
from xiqa.schema import ARCHS  # noqa: F401  (the study's four, for the tests' parametrize)
SIZE = 96  # the last feature map is 3 × 3, so every method has some spatial structure


def random_images(n: int, seed: int, size: int = SIZE) -> Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def hooked_layer_tensors(model: nn.Module, x: Tensor, names: list[str], target: Tensor) -> tuple[dict, dict]:
    """Reference capture with plain hooks on the untouched model: activations and gradients of
    ``sum_n logits[n, target[n]]`` at ``names`` (independent of xiqa.saliency.capture)."""
    acts: dict[str, Tensor] = {}
    handles = []
    for name in names:
        module = model.get_submodule(name.split(":")[0])
        if name.endswith(":input"):
            handles.append(module.register_forward_pre_hook(lambda m, a, n=name: acts.__setitem__(n, a[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, a, o, n=name: acts.__setitem__(n, o)))
    try:
        logits = model(x.clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), [acts[n] for n in names])
    return {n: acts[n].detach() for n in names}, dict(zip(names, grads))


def preset(arch: str) -> dict[str, tuple[str, ...]]:
    return layers(arch)


EPS32 = torch.finfo(torch.float32).eps
# A float32 map in [0, 1] leaves the last tensor two implementations share through upsampling, a
# channel sum of |·| and min-max normalisation: on the order of 10² roundings of values <= 1.
FLOAT32_FLOOR = 128 * EPS32
# A wrong method (another target class, the plain instead of the guided gradient, a missing
# ReLU) moves maps by tenths; a reference noisier than this could not tell.
MAX_USEFUL_TOLERANCE = 0.1


def reference_noise(reference: Callable[[Tensor, Tensor], Tensor], x: Tensor, target: Tensor
                    ) -> tuple[Tensor, float]:
    """The reference's maps of the batch ``x`` and how far they move under another rounding: the
    largest difference to its maps of one image at a time (other kernels, other summation
    order; on these models as large as its 1-vs-2-thread difference). A deep random network
    amplifies float32 rounding chaotically (SPEC 10: up to ~1e-2 after min-max), so two correct
    implementations can differ by that much."""
    batch = reference(x, target)
    single = torch.cat([reference(x[i:i + 1], target[i:i + 1]) for i in range(len(x))])
    return batch, float((batch - single).abs().amax())


def assert_maps_match_reference(got: Tensor, reference: Callable[[Tensor, Tensor], Tensor], x: Tensor,
                                target: Tensor, msg: str = "") -> None:
    """``got`` equals ``reference(x, target)`` within twice the reference's own noise (at least
    the float32 floor), and that tolerance is still small enough to catch a wrong method."""
    expected, noise = reference_noise(reference, x, target)
    tolerance = max(FLOAT32_FLOOR, 2 * noise)
    assert tolerance < MAX_USEFUL_TOLERANCE, f"{msg}: the reference moves by {noise:.3g} by itself"
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=0, msg=msg)
