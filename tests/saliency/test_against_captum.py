"""Grad-CAM, Guided Backprop, Guided Grad-CAM and Input × Gradient against Captum (ResNets) and
against an independent module-swap reference for the guided SiLU rule (EfficientNets).

The models are deep and random, so their maps are chaotic in float32 rounding (SPEC 10): every
comparison allows twice the reference's own batch-vs-image and thread noise, measured here on the
same inputs (``assert_maps_match_reference``), never a hand-picked round number."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

from saliency_helpers import ARCHS, SIZE, assert_maps_match_reference, random_images
from xiqa.models.zoo import get_module, layers
from xiqa.saliency import explain
from xiqa.saliency.methods import normalise

captum_attr = pytest.importorskip("captum.attr")


def reduce(attr: Tensor) -> Tensor:
    """SPEC 4: a channel map becomes Σ_c |·|, then min-max normalised."""
    return normalise(attr.abs().sum(1))


def captum_gradcam(model: nn.Module, arch: str, x: Tensor, target: Tensor) -> Tensor:
    """Raw (upsampled, ReLU'd, not normalised) Grad-CAM from Captum: [N, 1, H, W]."""
    name = layers(arch)["gradcam"][0]
    on_input = name.endswith(":input")
    cam = captum_attr.LayerGradCam(model, get_module(model, name)).attribute(
        x, target=target, relu_attributions=True, attribute_to_layer_input=on_input)
    return captum_attr.LayerAttribution.interpolate(cam, (SIZE, SIZE), interpolate_mode="bilinear")


class _GuidedSiLU(torch.autograd.Function):
    """SiLU forward; backward max(g, 0) · max(silu'(x), 0) (the documented guided SiLU rule)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g.clamp(min=0) * (s * (1 + x * (1 - s))).clamp(min=0)


class GuidedSiLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return _GuidedSiLU.apply(x)


def guided_reference(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Guided input gradient of a copy of ``model`` whose every SiLU / Swish module is replaced
    by :class:`GuidedSiLU` (EfficientNets have no ReLU)."""
    from efficientnet_pytorch.utils import MemoryEfficientSwish, Swish

    twin = copy.deepcopy(model)
    swapped = 0
    for name, module in list(twin.named_modules()):
        if isinstance(module, (nn.SiLU, MemoryEfficientSwish, Swish)):
            parent, _, attr = name.rpartition(".")
            setattr(twin.get_submodule(parent) if parent else twin, attr, GuidedSiLU())
            swapped += 1
        assert not isinstance(module, nn.ReLU)
    assert swapped > 10
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(twin(x).gather(1, target[:, None]).sum(), [x])
    return grad


@pytest.fixture(autouse=True)
def _quiet_captum():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("arch", ARCHS)
def test_gradcam_and_input_x_gradient_match_captum(arch: str, random_model) -> None:
    model = random_model(arch)
    x = random_images(3, seed=11)
    target = model(x).argmax(1)
    maps = explain(model, x, ["gradcam", "input_x_gradient"], arch=arch)
    assert_maps_match_reference(maps["gradcam"], lambda x, t: normalise(captum_gradcam(model, arch, x, t)[:, 0]),
                                x, target, f"{arch} gradcam")
    ixg = captum_attr.InputXGradient(model)
    assert_maps_match_reference(maps["input_x_gradient"], lambda x, t: reduce(ixg.attribute(x, target=t)),
                                x, target, f"{arch} input_x_gradient")


@pytest.mark.parametrize("arch", ["resnet34", "resnet50"])
def test_guided_backprop_and_guided_gradcam_match_captum_on_resnets(arch: str, random_model) -> None:
    model = random_model(arch)
    x = random_images(3, seed=12)
    target = torch.tensor([1, 0, 1])  # not (necessarily) the predicted class
    maps = explain(model, x, ["guided_backprop", "guided_gradcam"], arch=arch, target=target)
    gbp = captum_attr.GuidedBackprop(model)
    assert_maps_match_reference(maps["guided_backprop"], lambda x, t: reduce(gbp.attribute(x, target=t)),
                                x, target, f"{arch} guided_backprop")
    layer = get_module(model, layers(arch)["gradcam"][0])
    ggc = captum_attr.GuidedGradCam(model, layer)
    assert_maps_match_reference(
        maps["guided_gradcam"], lambda x, t: reduce(ggc.attribute(x, target=t, interpolate_mode="bilinear")),
        x, target, f"{arch} guided_gradcam")


@pytest.mark.parametrize("arch", ["efficientnet_b0", "efficientnet-b0"])
def test_guided_silu_rule_matches_module_swap_reference_and_is_not_the_plain_gradient(arch: str, random_model) -> None:
    model = random_model(arch)
    x = random_images(3, seed=13)
    target = torch.tensor([0, 1, 1])
    maps = explain(model, x, ["guided_backprop", "guided_gradcam", "input_x_gradient"], arch=arch, target=target)
    assert_maps_match_reference(maps["guided_backprop"], lambda x, t: reduce(guided_reference(model, x, t)),
                                x, target, f"{arch} guided_backprop")
    assert_maps_match_reference(
        maps["guided_gradcam"],
        lambda x, t: reduce(guided_reference(model, x, t) * captum_gradcam(model, arch, x, t)),
        x, target, f"{arch} guided_gradcam")
    # Captum's GuidedBackprop only hooks ReLUs: on a SiLU network it is the plain gradient, which
    # is exactly the silent degradation the guided rule must avoid.
    plain = captum_attr.GuidedBackprop(model).attribute(x, target=target)
    assert (maps["guided_backprop"] - reduce(plain)).abs().amax() > 0.1
