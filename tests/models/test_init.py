"""The model conditions (trained / SR / FR) and ImageNet weight resolution."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from xiqa.errors import XiqaError
from xiqa.models import build
from xiqa.models.init import fully_randomise, initialise, load_imagenet_backbone
from xiqa.models.weights import (IMAGENET_FILES, WEIGHTS_ENV, WeightsUnavailable,
                                 imagenet_state_dict, resolve_imagenet_weights)

ARCH = "resnet34"


@pytest.fixture(autouse=True)
def _no_cached_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's torchvision cache or weights variable."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)


@pytest.fixture
def imagenet_file(tmp_path: Path) -> Path:
    """A stand-in ImageNet checkpoint: a 1000-way resnet34 with recognisable random weights,
    saved under its official name."""
    torch.manual_seed(123)
    reference = build(ARCH, num_classes=1000)
    path = tmp_path / "weights" / IMAGENET_FILES[ARCH][0]
    path.parent.mkdir()
    torch.save(reference.state_dict(), path)
    return path


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fr_same_seed_gives_identical_weights_and_other_seeds_differ() -> None:
    a = _state(fully_randomise(build(ARCH), seed=1))
    torch.manual_seed(999)  # the global generator must not matter
    b = _state(fully_randomise(build(ARCH), seed=1))
    c = _state(fully_randomise(build(ARCH), seed=2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_fr_reinitialises_every_parameter_with_he_normal_and_unit_batchnorm() -> None:
    model = build(ARCH)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
        model.bn1.running_mean.fill_(3.0)
    fully_randomise(model, seed=0)
    for name, p in model.named_parameters():
        assert not torch.all(p == 7.0), name
    assert torch.equal(model.bn1.weight, torch.ones_like(model.bn1.weight))
    assert torch.equal(model.bn1.bias, torch.zeros_like(model.bn1.bias))
    assert torch.equal(model.bn1.running_mean, torch.zeros_like(model.bn1.running_mean))
    assert torch.equal(model.fc.bias, torch.zeros_like(model.fc.bias))
    w = model.layer4[0].conv1.weight.detach()  # 512 x 256 x 3 x 3: fan_in 2304
    assert float(w.std()) == pytest.approx(math.sqrt(2.0 / (256 * 9)), rel=0.02)
    assert abs(float(w.mean())) < 1e-3


def test_fr_refuses_a_parameter_it_has_no_rule_for() -> None:
    model = nn.Sequential(nn.Linear(3, 3))
    model.register_parameter("scale", nn.Parameter(torch.ones(3)))
    with pytest.raises(TypeError, match="scale"):
        fully_randomise(model, seed=0)


def test_sr_keeps_imagenet_backbone_and_seeds_only_the_head(imagenet_file: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(imagenet_file))
    reference = torch.load(imagenet_file, weights_only=True)
    a = initialise(build(ARCH), ARCH, "sr", seed=1)
    b = initialise(build(ARCH), ARCH, "sr", seed=1)
    c = initialise(build(ARCH), ARCH, "sr", seed=2)
    for key, value in a.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, reference[key]), key
    assert a.fc.weight.shape == (2, 512)
    assert torch.equal(a.fc.weight, b.fc.weight)
    assert not torch.equal(a.fc.weight, c.fc.weight)
    assert torch.equal(a.fc.bias, torch.zeros(2))


def test_trained_condition_starts_from_imagenet_only_when_pretrained(imagenet_file: Path) -> None:
    reference = torch.load(imagenet_file, weights_only=True)
    pre = initialise(build(ARCH), ARCH, "trained", seed=1, pretrained=True, weights=imagenet_file)
    assert torch.equal(pre.conv1.weight, reference["conv1.weight"])
    scratch = initialise(build(ARCH), ARCH, "trained", seed=1, pretrained=False)
    assert not torch.equal(scratch.conv1.weight, reference["conv1.weight"])


def test_weights_resolve_from_params_path_then_env_then_torchvision_cache(
        imagenet_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    cached = cache / imagenet_file.name
    cached.write_bytes(imagenet_file.read_bytes())
    assert resolve_imagenet_weights(ARCH) == cached
    other = tmp_path / "env"
    other.mkdir()
    (other / f"{ARCH}.pth").write_bytes(imagenet_file.read_bytes())
    monkeypatch.setenv(WEIGHTS_ENV, str(other))  # a folder: found as <arch>.pth
    assert resolve_imagenet_weights(ARCH) == other / f"{ARCH}.pth"
    assert resolve_imagenet_weights(ARCH, imagenet_file.parent) == imagenet_file


def test_missing_weights_say_in_one_sentence_how_to_supply_them() -> None:
    with pytest.raises(WeightsUnavailable) as err:
        imagenet_state_dict(ARCH)
    message = str(err.value)
    assert IMAGENET_FILES[ARCH][0] in message and WEIGHTS_ENV in message
    assert "randomise.imagenet_weights" in message and "pretrained: false" in message
    assert "\n" not in message and message.count(". ") == 0
    with pytest.raises(WeightsUnavailable):
        load_imagenet_backbone(build(ARCH), ARCH)


def test_a_named_path_that_does_not_exist_is_an_error_not_a_skip(tmp_path: Path) -> None:
    with pytest.raises(XiqaError, match="does not exist") as err:
        resolve_imagenet_weights(ARCH, tmp_path / "nope.pth")
    assert not isinstance(err.value, WeightsUnavailable)


def test_weights_of_another_architecture_are_refused_naming_the_file(tmp_path: Path) -> None:
    wrong = tmp_path / "resnet50.pth"
    torch.save(build("resnet50", num_classes=1000).state_dict(), wrong)
    with pytest.raises(XiqaError, match=r"resnet50\.pth: not ImageNet weights of resnet34"):
        imagenet_state_dict(ARCH, wrong)


def test_imagenet_backbone_loads_weights_from_the_environment(imagenet_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(imagenet_file.parent))
    model = build(ARCH)
    assert load_imagenet_backbone(model, ARCH) == imagenet_file
    assert torch.equal(model.conv1.weight, torch.load(imagenet_file, weights_only=True)["conv1.weight"])


@pytest.mark.parametrize("env", [{}, {"TORCH_HOME": "/opt/th"}, {"XDG_CACHE_HOME": "/var/cache/x"}])
def test_hub_dir_without_torch_matches_torch_hub_get_dir(env: dict[str, str]) -> None:
    """The sr skip path finds torchvision's cache without importing torch, by torch's rules."""
    import os
    import subprocess
    import sys

    code = ("import sys; from xiqa.models.weights import hub_dir; a = hub_dir(); "
            "assert 'torch' not in sys.modules; import torch; print(a == __import__('pathlib').Path(torch.hub.get_dir()))")
    clean = {k: v for k, v in os.environ.items() if k not in ("TORCH_HOME", "XDG_CACHE_HOME")}
    out = subprocess.run([sys.executable, "-c", code], env=clean | env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "True"


def test_fr_reinitialises_every_parameter_of_a_convnext_layer_scale_included() -> None:
    import torchvision.models as tvm

    from xiqa.models.init import LAYER_SCALE_INIT, fully_randomise

    model = tvm.convnext_tiny(weights=None, num_classes=2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # as if trained: every parameter must move
    fully_randomise(model, seed=3)
    scales = [p for n, p in model.named_parameters() if n.endswith("layer_scale")]
    assert len(scales) == 18 and all(torch.all(p == LAYER_SCALE_INIT) for p in scales)
    assert not any(torch.all(p == 0.5) for p in model.parameters())
