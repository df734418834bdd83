"""Seeded random models with estimated BatchNorm statistics (SPEC 10), shared by the saliency tests."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from saliency_helpers import ARCHS, random_images
from xiqa.models import build, estimate_bn_statistics


@pytest.fixture(scope="session")
def random_model() -> Callable[[str], nn.Module]:
    """``random_model(arch)``: a seeded random eval-mode model, BN statistics estimated on random
    batches (a fresh EfficientNet-B0 in eval mode returns the same logits for every input)."""
    cache: dict[str, nn.Module] = {}

    def get(arch: str) -> nn.Module:
        if arch not in cache:
            torch.manual_seed(ARCHS.index(arch) + 1)
            model = build(arch)
            cache[arch] = estimate_bn_statistics(model, [random_images(4, 100 + k) for k in range(2)])
        return cache[arch]

    return get
