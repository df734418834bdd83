"""Helpers shared by the saliency tests (imported as a plain module: tests/ is no package)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xiqa.models import layers

ARCHS = ("resnet34", "resnet50", "efficientnet_b0", "efficientnet-b0")
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
