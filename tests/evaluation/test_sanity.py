"""Model-parameter randomisation test and random-logit check: layer order against Quantus,
what each step changes, determinism, the trained model left alone, similarities against
scipy / skimage / Quantus, and the whole test on a small real model."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from torch import nn

from xiqa.errors import XiqaError
from xiqa.evaluation import sanity as S
from xiqa.models import build, estimate_bn_statistics
from xiqa.models.zoo import CASCADES, cascade
from xiqa.saliency import METHODS, explain

ARCHS = tuple(CASCADES)
SIZE = 64  # ResNet's last block is 2 x 2: Grad-CAM is not constant
EPS64 = float(np.finfo(np.float64).eps)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # explain on a shared 2-core machine is many times slower with two threads than with one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """A seeded random ResNet-34 with estimated BatchNorm statistics, standing in for a trained one."""
    torch.manual_seed(7)
    return estimate_bn_statistics(build("resnet34"), [images(4, 100 + k) for k in range(2)])


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def step_of(name: str, steps: tuple[tuple[str, ...], ...]) -> int:
    """1-based cascade step whose block holds the module or state entry ``name``."""
    hits = [i for i, block in enumerate(steps, 1) for m in block if name == m or name.startswith(m + ".")]
    assert len(hits) == 1, (name, hits)
    return hits[0]


# --------------------------------------------------------------------------- the cascade
@pytest.mark.parametrize("arch", ARCHS)
def test_cascade_covers_every_parameter_once_in_quantus_top_down_order(arch: str) -> None:
    from quantus.helpers.model.pytorch_model import PyTorchModel

    torch.manual_seed(0)
    model = build(arch)
    steps = cascade(arch)
    owners = [step_of(name, steps) for name, _ in model.named_parameters()]
    assert set(owners) == set(range(1, len(steps) + 1))  # every step randomises something
    # Quantus (MPRT, layer_order="top_down") re-initialises one module at a time, in reverse
    # registration order; ours must be the same order in blocks
    quantus_order = [name for name, _ in PyTorchModel(model).get_random_layer_generator(order="top_down")]
    with_params = [n for n in quantus_order if any(True for _ in model.get_submodule(n).parameters(recurse=False))]
    blocks = [step_of(n, steps) for n in with_params]
    assert blocks == sorted(blocks) and set(blocks) == set(range(1, len(steps) + 1))


def test_cascade_labels_are_the_documented_blocks() -> None:
    assert [ "+".join(b) for b in cascade("resnet50")] == ["fc", "layer4", "layer3", "layer2", "layer1", "conv1+bn1"]
    assert ["+".join(b) for b in cascade("efficientnet_b0")] == ["classifier", *(f"features.{k}" for k in range(8, -1, -1))]
    ep = cascade("efficientnet-b0")
    assert ep[0] == ("_fc",) and ep[1] == ("_conv_head", "_bn1") and ep[-1] == ("_conv_stem", "_bn0")
    assert ep[2] == ("_blocks.15",) and ep[3] == tuple(f"_blocks.{i}" for i in (11, 12, 13, 14))
    assert len(ep) == len(cascade("efficientnet_b0")) == 10
    with pytest.raises(XiqaError, match="unknown architecture"):
        cascade("resnet_99")  # vgg16 is a torchvision classifier: a derived cascade (issue 26)


@pytest.mark.parametrize("arch", ["resnet34", "efficientnet-b0"])
def test_step_k_reinitialises_exactly_the_blocks_up_to_k_and_leaves_the_model_alone(arch: str) -> None:
    torch.manual_seed(1)
    model = estimate_bn_statistics(build(arch), [images(2, 5, 32)])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # like training: no parameter keeps its initial value (a zero bias would)
    before, mode = state(model), model.training
    steps = cascade(arch)
    seen = []
    for step, block, randomised in S.randomise_cascade(model, arch, seed=3):
        assert block == "+".join(steps[step - 1]) and not randomised.training
        now = randomised.state_dict()
        changed = {k for k in before if not torch.equal(before[k], now[k])}
        expected = {k for k in before if step_of(k, steps) <= step}
        assert changed == expected, (step, sorted(changed ^ expected)[:5])
        seen.append(step)
    assert seen == list(range(1, len(steps) + 1))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the trained model is untouched
    assert model.training == mode


def test_reinitialised_blocks_follow_the_fr_rule_and_depend_only_on_the_seed(trained: nn.Module) -> None:
    def final(seed: int) -> dict[str, torch.Tensor]:
        *_, (_, _, model) = S.randomise_cascade(trained, "resnet34", seed)
        return state(model)

    torch.manual_seed(123)  # the global generator must not matter
    a, b, c = final(1), final(1), final(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layer2.0.conv1.weight"], c["layer2.0.conv1.weight"])
    assert torch.equal(a["layer3.1.bn1.weight"], torch.ones(256)) and torch.equal(a["fc.bias"], torch.zeros(2))
    assert torch.equal(a["bn1.running_var"], torch.ones(64))
    w = a["layer4.0.conv1.weight"]  # He normal: std sqrt(2 / fan_in), fan_in = 256 * 9
    assert float(w.std()) == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.02)


# --------------------------------------------------------------------------- similarities
def test_average_ranks_equal_scipy_rankdata_with_ties() -> None:
    from xiqa.evaluation.localisation import average_ranks

    x = torch.randint(0, 7, (6, 40), generator=torch.Generator().manual_seed(3)).float()
    x[0] = 2.0  # one run of 40 ties
    np.testing.assert_array_equal(average_ranks(x).numpy(), scipy.stats.rankdata(x.numpy(), axis=1))


def test_spearman_of_absolute_maps_equals_scipy_and_quantus_with_ties_and_signs() -> None:
    from quantus.functions.similarity_func import correlation_spearman

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 9, 10, dtype=torch.float64, generator=gen).round(decimals=1)  # ties, signs
    b = a + 0.5 * torch.randn(5, 9, 10, dtype=torch.float64, generator=gen).round(decimals=1)
    got = S.spearman(a, b)
    for n in range(5):
        x, y = a[n].abs().numpy().ravel(), b[n].abs().numpy().ravel()
        ref = scipy.stats.spearmanr(x, y).statistic
        # Pearson of average ranks in float64 over 90 pixels: a few ulps times the pixel count
        assert got[n].item() == pytest.approx(ref, abs=90 * 4e-16)
        assert got[n].item() == pytest.approx(correlation_spearman(x, y), abs=90 * 4e-16)
    assert S.spearman(a, a).tolist() == pytest.approx([1.0] * 5, abs=90 * 4e-16)


def test_ssim_equals_quantus_similarity_on_the_2d_maps() -> None:
    from quantus.functions.similarity_func import ssim as quantus_ssim

    gen = torch.Generator().manual_seed(1)
    a = torch.rand(4, 16, 12, generator=gen)
    b = (a + 0.3 * torch.rand(4, 16, 12, generator=gen)).clamp(max=1)
    got = S.ssim(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = [quantus_ssim(a[n].double().numpy(), b[n].double().numpy()) for n in range(4)]
    assert got.tolist() == ref  # the same function on the same float64 arrays
    assert S.ssim(a, a).tolist() == pytest.approx([1.0] * 4, abs=1e-12)
    with pytest.raises(XiqaError, match="7 x 7"):
        S.ssim(torch.rand(1, 6, 20), torch.rand(1, 6, 20))


def test_a_constant_map_has_no_similarity_nan_never_an_error() -> None:
    a = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2))
    b = a.clone()
    b[1] = 0.0
    a[2] = 0.25
    for sim in (S.spearman, S.ssim):
        v = sim(a, b)
        assert v[0].item() == pytest.approx(1.0, abs=1e-12) and math.isnan(v[1]) and math.isnan(v[2])


# --------------------------------------------------------------------------- the whole test
def test_mprt_explains_once_per_step_for_the_trained_class_and_compares_with_the_trained_maps(
        trained: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    x = images(2, 11)
    calls = []
    real = S.explain

    def counted(*args, **kwargs):
        calls.append(kwargs.get("target"))
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "explain", counted)
    before = state(trained)
    frame = S.mprt(trained, x, "resnet34", seed=5)
    steps = len(cascade("resnet34"))
    assert len(calls) == steps + 1 and calls[0] is None  # trained, then one call per step
    predicted = trained(x).argmax(1)
    assert all(torch.equal(t, predicted) for t in calls[1:])  # the trained model's class
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert list(frame.columns) == list(S.MPRT_COLUMNS)
    assert len(frame) == (steps + 1) * len(METHODS) * 2
    assert frame.groupby("step")["block"].first().tolist() == ["original", "fc", "layer4", "layer3",
                                                              "layer2", "layer1", "conv1+bn1"]
    original = frame[frame.step == 0]
    # at 64 px layer4 is 2 x 2 and its gradient, flowing back from the average pool, is the same
    # at every position: single-layer NormGrad conv3x3 (whose zero-padded 3 x 3 neighbourhood is
    # the whole 2 x 2 map) is constant, so it has no similarity and is counted
    const = frame.method == "normgrad_conv3x3_single"
    assert frame.constant.eq(const).all() and frame[const].spearman.isna().all() and frame[const].ssim.isna().all()
    kept = original[~original.constant]
    assert np.allclose(kept.spearman, 1.0, atol=1e-12) and np.allclose(kept.ssim, 1.0, atol=1e-12)

    # step 4 (layer2 randomised) recomputed here from the cascade and scipy / skimage
    *_, (_, _, model4) = itertools.islice(S.randomise_cascade(trained, "resnet34", 5), 4)
    ref_maps = real(trained, x, arch="resnet34")
    maps4 = real(model4, x, arch="resnet34", target=predicted)
    from skimage.metrics import structural_similarity

    for method in ("guided_backprop", "normgrad_conv3x3_multi"):
        rows = frame[(frame.step == 4) & (frame.method == method)].sort_values("image")
        for n in range(2):
            p, q = ref_maps[method][n].double().numpy(), maps4[method][n].double().numpy()
            rho = scipy.stats.spearmanr(p.ravel(), q.ravel()).statistic
            both = np.concatenate([p, q])
            s = structural_similarity(p, q, data_range=float(both.max() - both.min()))
            # the same maps (one thread, same weights, same batch): only the float64 maths of
            # the rank correlation over P pixels differs, SSIM is the same function
            assert rows.spearman.iloc[n] == pytest.approx(rho, abs=p.size * EPS64)
            assert rows.ssim.iloc[n] == s

    again = S.mprt(trained, x, "resnet34", seed=5)
    pd.testing.assert_frame_equal(frame, again)  # deterministic for a seed
    calls.clear()
    chunked = S.mprt(trained, x, "resnet34", seed=5, methods=["gradcam"], batch_size=1)
    assert len(calls) == 2 * (steps + 1) and len(chunked) == (steps + 1) * 2  # one call per image

    means = S.step_means(frame)
    assert len(means) == (steps + 1) * len(METHODS) and (means.n + means.n_constant == 2).all()
    assert means[means.method == "normgrad_conv3x3_single"].n_constant.eq(2).all()
    hist = S.metric_histories(frame)
    assert set(hist) == {f"mprt_{s}/{m}" for s in ("spearman", "ssim") for m in METHODS
                         if m != "normgrad_conv3x3_single"}
    assert [s for s, _ in hist["mprt_ssim/guided_backprop"]] == list(range(steps + 1))
    gb = means[means.method == "guided_backprop"].set_index("step")
    assert hist["mprt_spearman/guided_backprop"][3] == (3, pytest.approx(gb.spearman[3]))


def test_step_means_count_constant_maps_and_histories_skip_all_constant_steps() -> None:
    frame = pd.DataFrame({"step": [0, 0, 1, 1], "block": ["original"] * 2 + ["fc"] * 2,
                          "method": "gradcam", "image": [0, 1, 0, 1],
                          "spearman": [1.0, 1.0, math.nan, math.nan], "ssim": [1.0, 1.0, math.nan, math.nan],
                          "constant": [False, False, True, True]})
    means = S.step_means(frame)
    assert means.n.tolist() == [2, 0] and means.n_constant.tolist() == [0, 2]
    assert S.metric_histories(frame) == {"mprt_spearman/gradcam": [(0, 1.0)], "mprt_ssim/gradcam": [(0, 1.0)]}


def test_random_logit_compares_the_predicted_and_the_other_class(trained: nn.Module) -> None:
    x = images(3, 12)
    methods = ["gradcam", "guided_backprop", "normgrad_conv1x1_single"]
    frame = S.random_logit(trained, x, "resnet34", methods=methods)
    predicted = trained(x).argmax(1)
    assert list(frame.columns) == list(S.RANDOM_LOGIT_COLUMNS) and len(frame) == 9
    assert (frame.other == 1 - frame.target).all() and frame.target.tolist()[:3] == predicted.tolist()
    own = explain(trained, x, methods, arch="resnet34")
    other = explain(trained, x, methods, arch="resnet34", target=1 - predicted)
    for method in methods:
        got = frame[frame.method == method].ssim.to_numpy()
        ref = S.ssim(own[method], other[method]).numpy()
        np.testing.assert_array_equal(got, ref)  # the same maps (one thread), the same function
