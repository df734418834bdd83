"""Localisation metrics (mass, rank, AUC, top-k) against Quantus 0.6 and slow plain-Python
versions; box masks against brute force; baselines; NaN rules."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from xiqa.errors import XiqaError
from xiqa.evaluation import localisation as L

EPS64 = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------- references
def quantus_scores(a: np.ndarray, s: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Quantus 0.6 with its default arguments on maps ``a`` [N, H, W] and masks ``s`` [N, H, W]."""
    import quantus

    x = a[:, None]  # Quantus wants an input batch; the localisation metrics only read its shape
    y = np.zeros(len(a), dtype=int)
    metrics = {"mass": quantus.RelevanceMassAccuracy(disable_warnings=True),
               "rank": quantus.RelevanceRankAccuracy(disable_warnings=True),
               "auc": quantus.AUC(disable_warnings=True),
               "topk": quantus.TopKIntersection(k=k, disable_warnings=True)}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, metric in metrics.items():
            out[name] = np.asarray(metric(model=None, x_batch=x, y_batch=y, a_batch=a[:, None],
                                          s_batch=s[:, None].astype(np.float64), channel_first=True),
                                   dtype=np.float64)
    return out


def slow_mass(a: np.ndarray, s: np.ndarray) -> float:
    inside = total = 0.0
    for v in range(a.shape[0]):
        for u in range(a.shape[1]):
            total += float(a[v, u])
            if s[v, u]:
                inside += float(a[v, u])
    return inside / total


def slow_auc(a: np.ndarray, s: np.ndarray) -> float:
    """Every (in-mask, out-of-mask) pixel pair: 1 if the in-mask one is higher, 1/2 for a tie."""
    pos, neg = a[s].tolist(), a[~s].tolist()
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def slow_top(a: np.ndarray, s: np.ndarray, k: int) -> float:
    """Mask pixels among the k highest / k, averaged over every choice of which pixels of the
    tie group at the boundary fill the remaining places (every order of tied pixels)."""
    values, inside = a.ravel().tolist(), s.ravel().tolist()
    t = sorted(values, reverse=True)[k - 1]
    above = [i for i, v in enumerate(values) if v > t]
    tied = [i for i, v in enumerate(values) if v == t]
    base = sum(inside[i] for i in above)
    choices = [sum(inside[i] for i in c) for c in itertools.combinations(tied, k - len(above))]
    return (base + sum(choices) / len(choices)) / k


def boundary_split(a: np.ndarray, k: int) -> bool:
    """Does a tie group straddle the top-k boundary (the only case where Quantus' answer depends
    on numpy's unstable argsort)?"""
    d = np.sort(a.ravel())[::-1]
    return k < d.size and d[k - 1] == d[k]


def random_masks(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """1-3 random boxes per image (inclusive), via the brute-force rule."""
    s = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            x1, y1 = rng.integers(x0, w), rng.integers(y0, h)
            s[i, y0:y1 + 1, x0:x1 + 1] = True
    return s


# --------------------------------------------------------------------------- masks
def test_box_masks_equal_brute_force_over_inclusive_boxes_clipped_to_the_image() -> None:
    rng = np.random.default_rng(3)
    h, w = 13, 17
    boxes = []
    for n in range(12):
        k = int(rng.integers(0, 4))
        x0 = rng.integers(-5, w + 2, k)
        y0 = rng.integers(-5, h + 2, k)
        boxes.append(np.stack([x0, y0, x0 + rng.integers(0, 8, k), y0 + rng.integers(0, 8, k)], 1))
    masks = L.box_masks([torch.as_tensor(b) for b in boxes], (h, w))
    assert masks.dtype == torch.bool and masks.shape == (12, h, w)
    for n, b in enumerate(boxes):
        for v in range(h):
            for u in range(w):
                want = any(x0 <= u <= x1 and y0 <= v <= y1 for x0, y0, x1, y1 in b.tolist())
                assert bool(masks[n, v, u]) == want, (n, v, u)
    assert torch.equal(L.box_mask(boxes[0], (h, w)), masks[0])
    # x is the column, y the row; a one-pixel box is one pixel
    one = L.box_mask(torch.tensor([[4, 2, 4, 2]]), (6, 8))
    assert one.sum() == 1 and bool(one[2, 4])
    assert L.box_mask(np.array([[1.0, 1.0, 2.0, 3.0]]), (5, 5)).sum() == 6


def test_box_masks_reject_inverted_and_fractional_boxes() -> None:
    with pytest.raises(XiqaError, match="image 1"):
        L.box_masks([torch.zeros(0, 4), torch.tensor([[5, 0, 4, 3]])], (8, 8))
    with pytest.raises(XiqaError, match="integer"):
        L.box_mask(torch.tensor([[0.5, 0, 4, 3]]), (8, 8))


# --------------------------------------------------------------------------- metrics vs Quantus
def test_all_four_metrics_equal_quantus_on_float64_maps_with_negative_values() -> None:
    rng = np.random.default_rng(0)
    n, h, w = 24, 16, 20
    a = rng.normal(size=(n, h, w)) + 0.3  # signed, no ties
    s = random_masks(rng, n, h, w)
    s[0] = True  # a full mask: Quantus' AUC is undefined (NaN), mass = rank = topk = 1
    k = L.topk_count(h * w)
    ours = {m: v.numpy() for m, v in L.scores(torch.from_numpy(a), torch.from_numpy(s)).as_dict().items()}
    ref = quantus_scores(a, s, k)
    p = h * w
    # mass is a ratio of two float64 sums of P terms: each is off by at most ~P·eps·Σ|a|, so the
    # ratio by P·eps·(Σ|a|)·(1 + |mass|) / |Σ a| (signed maps can make Σ a small)
    cond = np.abs(a).sum((1, 2)) / np.abs(a.sum((1, 2)))
    tol_mass = 2 * p * EPS64 * cond * (1 + np.abs(ref["mass"]))
    assert np.all(np.abs(ours["mass"] - ref["mass"]) <= tol_mass)
    assert np.any(ours["mass"] > 1) or np.any(ours["mass"] < 0)  # negative values do matter
    # rank and top-k are ratios of small integers; AUC is sklearn's trapezoid sum over ≤ P points
    np.testing.assert_array_equal(ours["rank"], ref["rank"])
    np.testing.assert_array_equal(ours["topk"], ref["topk"])
    assert math.isnan(ours["auc"][0]) and math.isnan(ref["auc"][0])
    np.testing.assert_allclose(ours["auc"][1:], ref["auc"][1:], rtol=0, atol=p * EPS64)
    assert ours["mass"][0] == pytest.approx(1.0, abs=p * EPS64 * cond[0])
    assert ours["rank"][0] == ours["topk"][0] == 1.0


def test_ties_auc_equals_quantus_and_rank_topk_equal_quantus_unless_a_tie_straddles_the_cut() -> None:
    rng = np.random.default_rng(1)
    n, h, w = 40, 5, 6
    a = rng.integers(-2, 4, size=(n, h, w)).astype(np.float64)  # six values on 30 pixels: many ties
    s = random_masks(rng, n, h, w)
    s[:, 0, 0] = ~s[:, 1:, 1:].all((1, 2))  # never a full mask
    k = L.topk_count(h * w, 0.2)
    ours = L.scores(torch.from_numpy(a), torch.from_numpy(s), topk_fraction=0.2)
    ref = quantus_scores(a, s, k)
    np.testing.assert_allclose(ours.auc.numpy(), ref["auc"], rtol=0, atol=h * w * EPS64)
    split_rank = np.array([boundary_split(a[i], int(s[i].sum())) for i in range(n)])
    split_topk = np.array([boundary_split(a[i], k) for i in range(n)])
    assert split_rank.any() and (~split_rank).any() and split_topk.any() and (~split_topk).any()
    np.testing.assert_array_equal(ours.rank.numpy()[~split_rank], ref["rank"][~split_rank])
    np.testing.assert_array_equal(ours.topk.numpy()[~split_topk], ref["topk"][~split_topk])
    for i in range(n):  # and always the mean over every order of the tied pixels
        assert ours.rank[i].item() == pytest.approx(slow_top(a[i], s[i], int(s[i].sum())), abs=1e-15)
        assert ours.topk[i].item() == pytest.approx(slow_top(a[i], s[i], k), abs=1e-15)
        assert ours.auc[i].item() == pytest.approx(slow_auc(a[i], s[i]), abs=1e-15)


def test_metrics_on_float32_relu_maps_equal_the_slow_versions() -> None:
    # explain-like maps: float32 in [0, 1] with many exact zeros (a ReLU'd Grad-CAM)
    gen = torch.Generator().manual_seed(2)
    maps = torch.randn(6, 9, 11, generator=gen).clamp(min=0)
    maps = maps / maps.flatten(1).amax(1)[:, None, None]
    masks = torch.from_numpy(random_masks(np.random.default_rng(2), 6, 9, 11))
    got = L.scores(maps, masks)
    k = L.topk_count(99)
    a64, s = maps.double().numpy(), masks.numpy()
    for i in range(6):
        # float32 values summed in float64: exact products, P-term float64 sums
        assert got.mass[i].item() == pytest.approx(slow_mass(a64[i], s[i]), rel=4 * 99 * EPS64)
        assert got.rank[i].item() == pytest.approx(slow_top(a64[i], s[i], int(s[i].sum())), abs=1e-15)
        assert got.topk[i].item() == pytest.approx(slow_top(a64[i], s[i], k), abs=1e-15)
        assert got.auc[i].item() == pytest.approx(slow_auc(a64[i], s[i]), abs=1e-15)
    # the single-metric functions are the same numbers
    assert torch.equal(L.mass_accuracy(maps, masks), got.mass)
    assert torch.equal(L.rank_accuracy(maps, masks), got.rank)
    assert torch.equal(L.auc(maps, masks), got.auc)
    assert torch.equal(L.topk_intersection(maps, masks), got.topk)


def test_batch_results_equal_per_image_results() -> None:
    gen = torch.Generator().manual_seed(4)
    maps = torch.rand(5, 12, 12, generator=gen).round(decimals=1)
    masks = torch.from_numpy(random_masks(np.random.default_rng(4), 5, 12, 12))
    batch = L.scores(maps, masks)
    for i in range(5):
        one = L.scores(maps[i:i + 1], masks[i:i + 1])
        for name in L.NAMES:
            assert torch.equal(getattr(one, name), getattr(batch, name)[i:i + 1]), name


# --------------------------------------------------------------------------- degenerate cases
def test_constant_maps_and_empty_masks_give_nan_and_are_flagged_never_an_error() -> None:
    maps = torch.stack([torch.zeros(8, 8), torch.full((8, 8), 0.4), torch.rand(8, 8), torch.rand(8, 8)])
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[:3, 2:5, 2:6] = True
    got = L.scores(maps, masks)
    assert got.constant.tolist() == [True, True, False, False]
    assert got.empty.tolist() == [False, False, False, True]
    for name in L.NAMES:
        v = getattr(got, name)
        assert torch.isnan(v[[0, 1, 3]]).all() and not torch.isnan(v[2]), name
    # scored anyway, a constant map has its no-information values (ties by expectation)
    kept = L.scores(maps[1:2], masks[1:2], on_constant="score")
    assert kept.mass.item() == kept.rank.item() == kept.topk.item() == pytest.approx(12 / 64, abs=1e-15)
    assert kept.auc.item() == 0.5
    # an all-zero map has no mass even when scored
    assert torch.isnan(L.scores(maps[:1], masks[:1], on_constant="score").mass).all()


def test_full_mask_has_undefined_auc_and_perfect_mass_rank_topk() -> None:
    maps = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(5))
    got = L.scores(maps, torch.ones(1, 6, 6, dtype=torch.bool))
    assert math.isnan(got.auc.item())
    assert got.rank.item() == got.topk.item() == 1.0 and got.mass.item() == pytest.approx(1.0, abs=36 * EPS64)


def test_bad_input_is_a_clear_error() -> None:
    maps, masks = torch.rand(2, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool)
    maps[1, 2, 3] = math.nan
    with pytest.raises(XiqaError, match="map 1"):
        L.scores(maps, masks)
    with pytest.raises(XiqaError, match="shape"):
        L.scores(torch.rand(2, 4, 4), masks[:1])
    with pytest.raises(XiqaError, match="bool"):
        L.scores(torch.rand(2, 4, 4), masks.float())
    with pytest.raises(XiqaError, match="fraction"):
        L.topk_count(100, 0.0)


def test_every_metric_carries_its_metadata() -> None:
    assert L.NAMES == ("mass", "rank", "auc", "topk")
    for name, info in L.METRICS.items():
        assert info.name == name and info.higher_is_better and info.needs == ("boxes",) and info.unit
    got = L.scores(torch.rand(2, 8, 8), torch.ones(2, 8, 8, dtype=torch.bool)).as_dict()
    assert list(got) == list(L.NAMES) and all(v.dtype == torch.float64 and v.shape == (2,) for v in got.values())


def test_topk_count_rounds_half_up_and_stays_in_range() -> None:
    assert L.topk_count(128 * 128) == 819  # 819.2
    assert L.topk_count(224 * 224) == 2509  # 2508.8
    assert L.topk_count(600 * 600) == 18000
    assert L.topk_count(30, 0.05) == 2  # 1.5 rounds up
    assert L.topk_count(10, 0.01) == 1 and L.topk_count(10, 1.0) == 10


# --------------------------------------------------------------------------- baselines
def test_uniform_baseline_is_the_mask_fraction_and_half_auc() -> None:
    masks = L.box_masks([torch.tensor([[2, 3, 9, 5]]), torch.tensor([[0, 0, 0, 0], [15, 11, 15, 11]])], (12, 16))
    got = L.baselines(masks)["uniform"]
    frac = masks.flatten(1).double().mean(1)
    for name in ("mass", "rank", "topk"):
        torch.testing.assert_close(getattr(got, name), frac, rtol=0, atol=1e-15)
    assert got.auc.tolist() == [0.5, 0.5]


def test_centre_gaussian_baseline_scores_the_map_written_out_by_hand() -> None:
    h, w = 10, 14
    ref = np.array([[math.exp(-0.5 * (((u - 6.5) / 3.5) ** 2 + ((v - 4.5) / 2.5) ** 2)) for u in range(w)]
                    for v in range(h)])
    np.testing.assert_allclose(L.centre_gaussian_map((h, w)).numpy(), ref, rtol=4 * EPS64)
    masks = L.box_masks([torch.tensor([[5, 3, 8, 6]]), torch.tensor([[0, 0, 2, 2]])], (h, w))
    got = L.baselines(masks)["centre_gaussian"]
    g = L.centre_gaussian_map((h, w)).numpy()  # its exact ties (symmetry) decide AUC, so score it
    for i in range(2):
        s = masks[i].numpy()
        assert got.mass[i].item() == pytest.approx(slow_mass(g, s), rel=4 * h * w * EPS64)
        assert got.auc[i].item() == pytest.approx(slow_auc(g, s), abs=1e-15)
        assert got.rank[i].item() == pytest.approx(slow_top(g, s, int(s.sum())), abs=1e-15)
        assert got.topk[i].item() == pytest.approx(slow_top(g, s, L.topk_count(h * w)), abs=1e-15)
    assert got.auc[1] < 0.5 < got.auc[0] == 1.0  # a corner box vs the box around the centre
