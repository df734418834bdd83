"""Model zoo: every architecture builds deterministically with a He head and resolvable presets."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import nn

from xiqa.errors import XiqaError
from xiqa.models import ARCH_SPECS, build, head, layers
from xiqa.models.zoo import check_layers, get_module


@pytest.mark.parametrize("arch", list(ARCH_SPECS))
def test_build_is_deterministic_under_manual_seed_and_has_a_two_way_he_head(arch: str) -> None:
    torch.manual_seed(3)
    a = build(arch)
    torch.manual_seed(3)
    b = build(arch)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    fc = head(a, arch)
    assert isinstance(fc, nn.Linear) and fc.out_features == 2
    assert torch.count_nonzero(fc.bias) == 0
    # He normal: std sqrt(2 / fan_in); 2 x 1280 or 2 x 2048 samples pin it to a few per cent.
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2 / fc.in_features), rel=0.1)
    assert a(torch.randn(1, 3, 64, 64)).shape == (1, 2)


@pytest.mark.parametrize("arch", list(ARCH_SPECS))
def test_every_preset_layer_exists_in_the_built_model(arch: str) -> None:
    model = build(arch, num_classes=3)
    preset = layers(arch)
    check_layers(model, [*preset["gradcam"], *preset["single"], *preset["multi"]])
    assert head(model, arch).out_features == 3


def test_paper_presets_are_the_spec_layer_names() -> None:
    assert layers("resnet34")["multi"] == ("layer2.0", "layer3.0", "layer4.0", "layer4.2")
    assert layers("resnet50")["single"] == ("layer4.2",)
    tv = layers("efficientnet_b0")
    assert tv["single"] == ("features.8.2",)
    assert len(tv["multi"]) == 10 and tv["multi"][0] == "features.0.0" and tv["multi"][-2:] == ("features.8.0", "features.8.2")
    assert len(layers("efficientnet-b0")["multi"]) == 10


def test_efficientnet_pytorch_stage_starts_are_the_first_block_of_each_stage() -> None:
    model = build("efficientnet-b0")
    starts = [int(n.split(".")[1]) for n in layers("efficientnet-b0")["multi"] if n.startswith("_blocks.")]
    for i, block in enumerate(model._blocks):
        # a stage's first block is the one that changes the width (input != output filters)
        args = block._block_args
        assert (i in starts) == (args.input_filters != args.output_filters), i


def test_layer_overrides_replace_only_the_given_keys() -> None:
    out = layers("resnet34", {"multi": ["layer3.1", "layer4.2"]})
    assert out["multi"] == ("layer3.1", "layer4.2") and out["single"] == ("layer4.2",)


@pytest.mark.parametrize("overrides, words", [
    ({"mutli": ["layer4.2"]}, "unknown key 'mutli'"),
    ({"single": ["layer3.0", "layer4.2"]}, "exactly one layer"),
    ({"multi": []}, "non-empty"),
])
def test_bad_layer_overrides_name_the_key(overrides: dict, words: str) -> None:
    with pytest.raises(XiqaError, match=words):
        layers("resnet34", overrides)


def test_unknown_arch_and_unknown_layer_are_user_errors() -> None:
    with pytest.raises(XiqaError, match="unknown architecture 'resnet_99'"):
        build("resnet_99")
    with pytest.raises(XiqaError, match="layer 'layer9.0' does not exist"):
        get_module(build("resnet34"), "layer9.0")


@pytest.mark.skipif(importlib.util.find_spec("xiqa.models.weights") is None,
                    reason="xiqa.models.weights not written yet")
def test_pretrained_without_weights_is_a_clear_error_or_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    import xiqa.models.weights as weights

    from pathlib import Path

    from xiqa.models.init import initialise

    # no ImageNet weights on this machine: a clear error that says where to put them
    monkeypatch.setenv("XIQA_IMAGENET_WEIGHTS", "/nonexistent/imagenet")
    with pytest.raises(XiqaError, match="ImageNet weights"):
        initialise(build("resnet34"), "resnet34", "trained", 1, pretrained=True)
    # with weights (a seeded stand-in), the backbone loads and the two-class head is drawn afresh
    torch.manual_seed(0)
    reference = build("resnet34", num_classes=1000)
    state = dict(reference.state_dict())
    monkeypatch.setattr(weights, "imagenet_state_dict", lambda arch, where=None: state)
    monkeypatch.setattr(weights, "resolve_imagenet_weights", lambda arch, where=None: Path("stand-in.pth"))
    model = initialise(build("resnet34"), "resnet34", "trained", 1, pretrained=True)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 2
