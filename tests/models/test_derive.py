"""Layer presets and MPRT cascades derived from the network (issue 26) against the paper's
hand-written presets of the study's four architectures, and on architectures xiqa never saw."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xiqa.errors import XiqaError
from xiqa.models import zoo
from xiqa.models.derive import check_cascade, derive

# The paper's presets, written by hand (SPEC 4, docs/DESIGN.md) and cached in the zoo: the
# expectation of the derivation at the paper's depth J.
PAPER = {arch: (s.head, s.gradcam, s.single, s.multi, zoo.CASCADES[arch]) for arch, s in zoo.ARCH_SPECS.items()}


@pytest.mark.parametrize("arch", list(zoo.ARCH_SPECS))
def test_derived_head_layers_and_cascade_equal_the_papers_presets(arch: str) -> None:
    found = derive(zoo.constructor(arch)(), depth=zoo.PAPER_DEPTH[arch])
    assert (found.head, found.gradcam, (found.single,), found.multi, found.cascade) == PAPER[arch]


def test_depth_keeps_the_deepest_layers_ending_with_single_and_an_out_of_range_depth_is_refused() -> None:
    model = TinyNet()
    every = derive(model).multi
    assert every == ("stem.0", "stage.0", "stage.1")
    assert derive(model, depth=3).multi == every
    assert derive(model, depth=1).multi == ("stage.1",) == (derive(model).single,)
    assert derive(model, depth=2).multi == ("stage.0", "stage.1")
    with pytest.raises(XiqaError, match=r"depth 4: this TinyNet has only 3 multi-layer NormGrad layers"):
        derive(model, depth=4)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(XiqaError, match=f"depth {bad!r}: expected a whole number"):
            derive(model, depth=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["densenet121", "resnet18", "mobilenet_v3_small", "convnext_tiny"])
def test_any_torchvision_cnn_builds_with_a_two_way_head_and_a_cascade_over_every_parameter(arch: str) -> None:
    a = zoo.build(arch)
    assert zoo.head(a, arch).out_features == 2
    check_cascade(a, zoo.cascade(arch))
    preset = zoo.layers(arch)
    zoo.check_layers(a, [*preset["gradcam"], *preset["single"], *preset["multi"]])


class TinyNet(nn.Module):
    """A user's own CNN: two stages, GELU, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.GELU())
        self.stage = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GELU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stage(self.stem(x))).flatten(1))


def make_tiny() -> nn.Module:
    return TinyNet()


def test_a_module_callable_factory_is_an_architecture_built_deterministically() -> None:
    arch = f"{__name__}:make_tiny"
    torch.manual_seed(5)
    model = zoo.build(arch)  # the first build derives the presets from another model: no draw
    torch.manual_seed(5)
    again = zoo.build(arch)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values(),
                                                  strict=True))
    assert zoo.spec(arch).library == "torch"
    assert (zoo.spec(arch).gradcam, zoo.spec(arch).single) == ("stage", ("stage.1",))
    assert zoo.layers(arch)["multi"] == ("stem.0", "stage.0", "stage.1")
    assert zoo.cascade(arch) == (("fc",), ("stage",), ("stem",))
    assert zoo.head(model, arch).out_features == 2


def test_a_network_without_a_spatial_map_or_an_unknown_name_is_one_sentence() -> None:
    with pytest.raises(XiqaError, match="no module returning a spatial feature map"):
        derive(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), size=8)
    with pytest.raises(XiqaError, match="unknown architecture 'resnet_99'"):
        zoo.spec("resnet_99")
    with pytest.raises(XiqaError, match="cannot import 'nope' from 'xiqa.models'"):
        zoo.build("xiqa.models:nope")
