"""The capture: one forward, exact plain gradients, model left untouched, clear refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from saliency_helpers import ARCHS, hooked_layer_tensors, random_images
from xiqa.errors import XiqaError
from xiqa.models import build, layers
from xiqa.saliency import METHODS, capture, explain


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


def snapshot(model: nn.Module) -> dict:
    """Everything explain() could leave behind: hooks, modules, flags, gradients, parameters."""
    mods = list(model.named_modules())
    return {
        "modules": [(name, id(m), type(m)) for name, m in mods],
        # every hook dict by its handles' ids, so that a hook swapped for another is caught too
        "hooks": [{d: list(getattr(m, d, {})) for d in HOOK_DICTS} for _, m in mods],
        "inplace": [getattr(m, "inplace", None) for _, m in mods],
        "training": [m.training for _, m in mods],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [p.grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def assert_same(before: dict, after: dict) -> None:
    for key in ("modules", "hooks", "inplace", "training", "requires_grad"):
        assert before[key] == after[key], key
    assert all(g is None for g in after["grad"])
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_backward_through_the_gates_equals_the_untouched_models_gradients_exactly(arch: str, random_model) -> None:
    model = random_model(arch)
    x = random_images(2, seed=21)
    names = list(layers(arch)["multi"])
    cap = capture(model, x, names, input_grad=True, guided=True)
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    assert torch.equal(cap.logits, logits.detach())
    assert torch.equal(cap.target, logits.argmax(1))
    (grad,) = torch.autograd.grad(logits.gather(1, cap.target[:, None]).sum(), [xr])
    assert torch.equal(cap.input_grad, grad)
    acts, grads = hooked_layer_tensors(model, x, names, cap.target)
    for name in names:
        assert torch.equal(cap.activations[name], acts[name]), name
        assert torch.equal(cap.gradients[name], grads[name]), name
    assert not torch.equal(cap.guided_input_grad, cap.input_grad)


def test_explain_leaves_the_model_exactly_as_it_was(random_model) -> None:
    model = random_model("resnet34")
    model.layer1.requires_grad_(False)  # a partly frozen model stays partly frozen
    try:
        before = snapshot(model)
        maps = explain(model, random_images(2, seed=22), arch="resnet34")
        assert set(maps) == set(METHODS)
        assert_same(before, snapshot(model))
    finally:
        model.layer1.requires_grad_(True)


@pytest.mark.parametrize("arch", ["resnet34", "efficientnet_b0"])
def test_hooks_are_removed_and_flags_restored_when_the_forward_raises(arch: str, random_model) -> None:
    model = random_model(arch)
    before = snapshot(model)

    def boom(module, args, out):
        raise RuntimeError("boom")

    last = model.fc if arch == "resnet34" else model.classifier
    handle = last.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            explain(model, random_images(2, seed=23), arch=arch)
    finally:
        handle.remove()
    assert_same(before, snapshot(model))


def test_capture_keeps_the_callers_own_hooks_and_inplace_flags_when_the_forward_raises() -> None:
    relu = nn.ReLU(inplace=True)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), relu, nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2)).eval()
    own = [relu.register_forward_hook(lambda *_: None), relu.register_forward_pre_hook(lambda *_: None),
           relu.register_full_backward_hook(lambda *_: None), model[2].register_full_backward_pre_hook(lambda *_: None)]
    before = snapshot(model)
    assert sum(len(h[d]) for h in before["hooks"] for d in HOOK_DICTS) == 4
    assert before["inplace"].count(True) == 1

    def boom(module, args, out):
        raise RuntimeError("boom")

    last = model[6].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            capture(model, random_images(1, seed=25, size=32), ["2", "4"], input_grad=True, guided=True)
    finally:
        last.remove()
    assert_same(before, snapshot(model))
    assert relu.inplace is True
    for h in own:
        h.remove()


def test_batch_results_equal_per_image_results(random_model) -> None:
    # float64: in float32 the convolution kernels chosen for batch 3 and batch 1 differ by
    # rounding, which can flip a ReLU whose input is ~1e-7 and move a gradient visibly.
    for arch, target in (("resnet50", None), ("efficientnet-b0", torch.tensor([1, 0, 1]))):
        model = copy.deepcopy(random_model(arch)).double()
        x = random_images(3, seed=24, size=64).double()
        batch = explain(model, x, arch=arch, target=target)
        for i in range(3):
            one = explain(model, x[i:i + 1], arch=arch, target=None if target is None else target[i:i + 1])
            for name in METHODS:
                torch.testing.assert_close(batch[name][i], one[name][0], atol=1e-5, rtol=0, msg=f"{arch} {name} {i}")


def test_explain_works_under_no_grad_and_returns_float32_maps_in_unit_range(random_model) -> None:
    model = random_model("efficientnet_b0")
    x = random_images(2, seed=25, size=64)
    with torch.no_grad():
        maps = explain(model, x, arch="efficientnet_b0", smooth=True)
    for name, m in maps.items():
        assert m.dtype == torch.float32 and m.shape == (2, 64, 64), name
        assert m.min() >= 0 and m.max() <= 1, name
        assert not m.requires_grad


def test_a_layer_that_runs_twice_per_forward_is_refused() -> None:
    model = build("efficientnet-b0").eval()  # its _swish runs at the stem and at the head
    with pytest.raises(XiqaError, match="'_swish' ran 2 times"):
        explain(model, random_images(1, seed=0, size=64), ["normgrad_conv1x1_multi"], arch="efficientnet-b0",
                layers={"multi": ["_swish", "_conv_head"]})


def test_guided_backprop_refuses_activations_without_a_rule_and_networks_without_activations() -> None:
    x = random_images(2, seed=1, size=8)
    gelu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(XiqaError, match="no rule for GELU at '1'"):
        capture(gelu, x, guided=True)
    linear = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(XiqaError, match="found no ReLU or SiLU"):
        capture(linear, x, guided=True)
    assert capture(linear, x, input_grad=True).input_grad.shape == x.shape  # plain methods still work


def test_bad_targets_methods_and_layers_are_user_errors(random_model) -> None:
    model = random_model("resnet34")
    x = random_images(2, seed=2, size=64)
    with pytest.raises(XiqaError, match=r"target classes must lie in \[0, 1\]"):
        explain(model, x, ["gradcam"], arch="resnet34", target=torch.tensor([0, 2]))
    with pytest.raises(XiqaError, match=r"shape \[2\]"):
        explain(model, x, ["gradcam"], arch="resnet34", target=torch.tensor([0]))
    with pytest.raises(XiqaError, match=r"unknown saliency method 'gradcam\+\+'"):
        explain(model, x, ["gradcam++"], arch="resnet34")
    with pytest.raises(XiqaError, match="layer 'layer5' does not exist"):
        explain(model, x, ["gradcam"], arch="resnet34", layers={"gradcam": ["layer5"]})


def test_each_image_is_explained_for_its_own_target(random_model) -> None:
    model = random_model("resnet34")
    x = random_images(2, seed=26)
    both = explain(model, x, ["gradcam", "input_x_gradient"], arch="resnet34", target=torch.tensor([0, 1]))
    zero = explain(model, x, ["gradcam", "input_x_gradient"], arch="resnet34", target=torch.tensor([0, 0]))
    one = explain(model, x, ["gradcam", "input_x_gradient"], arch="resnet34", target=torch.tensor([1, 1]))
    for name in both:
        torch.testing.assert_close(both[name][0], zero[name][0])
        torch.testing.assert_close(both[name][1], one[name][1])
        assert not torch.allclose(zero[name][1], one[name][1], atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_explain_on_cuda_matches_cpu(random_model) -> None:
    model = random_model("resnet34")
    x = random_images(2, seed=27)
    cpu = explain(model, x, arch="resnet34")
    try:
        gpu = explain(model.cuda(), x.cuda(), arch="resnet34")
    finally:
        model.cpu()
    for name in METHODS:
        assert gpu[name].device.type == "cuda"
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], atol=1e-3, rtol=0)
