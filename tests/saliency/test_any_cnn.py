"""Saliency on CNNs that xiqa only knows through derived presets (issue 26): DenseNet-121,
ResNet-18, MobileNetV3-Small and ConvNeXt-Tiny at 96 px.

Grad-CAM and Input × Gradient equal Captum's within twice Captum's own batch-vs-image noise
(``assert_maps_match_reference``, as for the study's architectures); multi-layer NormGrad reads
one layer per resolution stage; Guided Backprop is refused in one sentence where an activation has
no guided rule, and the other methods still run."""

from __future__ import annotations

import warnings

import pytest
import torch
from saliency_helpers import SIZE, assert_maps_match_reference, random_images
from torch import Tensor, nn

from xiqa.errors import XiqaError
from xiqa.models import build, estimate_bn_statistics, zoo
from xiqa.models.derive import derive
from xiqa.saliency import METHODS, applicable, explain
from xiqa.saliency.methods import normalise

captum_attr = pytest.importorskip("captum.attr")

OTHER_ARCHS = ("densenet121", "resnet18", "mobilenet_v3_small", "convnext_tiny")
# the activation without a guided rule, per architecture (None: ReLU only, Guided Backprop runs)
REFUSED_BY = {"densenet121": None, "resnet18": None, "mobilenet_v3_small": "Hardswish", "convnext_tiny": "GELU"}


@pytest.fixture(scope="module")
def other_model():
    cache: dict[str, nn.Module] = {}

    def get(arch: str) -> nn.Module:
        if arch not in cache:
            torch.manual_seed(OTHER_ARCHS.index(arch) + 21)
            model = build(arch)
            cache[arch] = estimate_bn_statistics(model, [random_images(4, 200 + k) for k in range(2)])
        return cache[arch]

    return get


@pytest.fixture(autouse=True)
def _quiet_captum():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def captum_gradcam(model: nn.Module, arch: str, x: Tensor, target: Tensor) -> Tensor:
    name = zoo.layers(arch)["gradcam"][0]
    cam = captum_attr.LayerGradCam(model, zoo.get_module(model, name)).attribute(
        x, target=target, relu_attributions=True, attribute_to_layer_input=name.endswith(":input"))
    return normalise(captum_attr.LayerAttribution.interpolate(cam, (SIZE, SIZE), interpolate_mode="bilinear")[:, 0])


@pytest.mark.parametrize("arch", OTHER_ARCHS)
def test_gradcam_and_input_x_gradient_match_captum_on_derived_layers(arch: str, other_model) -> None:
    model = other_model(arch)
    x = random_images(2, seed=31)
    target = model(x).argmax(1)
    maps = explain(model, x, ["gradcam", "input_x_gradient"], arch=arch)
    assert_maps_match_reference(maps["gradcam"], lambda x, t: captum_gradcam(model, arch, x, t), x, target,
                                f"{arch} gradcam")
    ixg = captum_attr.InputXGradient(model)
    assert_maps_match_reference(maps["input_x_gradient"],
                                lambda x, t: normalise(ixg.attribute(x, target=t).abs().sum(1)),
                                x, target, f"{arch} input_x_gradient")


@pytest.mark.parametrize("arch", OTHER_ARCHS)
def test_every_applicable_method_runs_and_multi_normgrad_reads_one_layer_per_stage(arch: str, other_model) -> None:
    model = other_model(arch)
    stages = derive(model).stages
    multi = zoo.layers(arch)["multi"]
    # one layer per stage, then the last feature map (unless the last stage's layer is that map)
    assert len(multi) in (len(stages), len(stages) + 1)
    kept, refused = applicable(model, METHODS)
    if REFUSED_BY[arch] is None:
        assert (kept, refused) == (METHODS, {})
    else:
        assert set(refused) == {"guided_backprop", "guided_gradcam"}
        assert all(REFUSED_BY[arch] in why and "\n" not in why for why in refused.values())
        with pytest.raises(XiqaError, match=f"no rule for {REFUSED_BY[arch]}"):
            explain(model, random_images(1, seed=1), ["guided_backprop"], arch=arch)
    info: dict = {}
    maps = explain(model, random_images(2, seed=32), kept, arch=arch, info=info)
    assert set(maps) == set(kept)
    for name, m in maps.items():
        assert m.shape == (2, SIZE, SIZE) and float(m.amin()) == 0.0 and float(m.amax()) == 1.0, name
    assert int(info["skipped_layers/normgrad_conv1x1_multi"].sum()) == 0
