"""Study statistics against plain maths and SciPy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from xiqa.errors import XiqaError
from xiqa.evaluation import stats


def test_mean_std_uses_sample_std_ddof_1():
    vals = [0.5, 0.75, 0.9]
    mean, std = stats.mean_std(vals)
    m = sum(vals) / 3
    assert mean == pytest.approx(m)
    assert std == pytest.approx(math.sqrt(sum((v - m) ** 2 for v in vals) / 2))
    assert std == pytest.approx(scipy.stats.tstd(vals))


def test_mean_std_of_one_value_has_no_std_and_empty_is_an_error():
    assert stats.mean_std([0.4]) == (0.4, None)
    with pytest.raises(XiqaError, match="no values"):
        stats.mean_std([])
    with pytest.raises(XiqaError, match="finite"):
        stats.mean_std([0.1, float("nan")])


def test_accuracy_leaves_out_images_without_boxes_and_refuses_empty_sets():
    assert stats.accuracy([1, 0, np.nan, 1]) == pytest.approx(2 / 3)
    with pytest.raises(XiqaError, match="no image with a box"):
        stats.accuracy([np.nan, np.nan])


def test_bootstrap_ci_matches_a_plain_loop_with_the_same_draws():
    rng = np.random.default_rng(3)
    hits = (rng.random((3, 25)) < 0.6).astype(float)
    hits[:, 4] = np.nan  # an image without a box is dropped for every seed
    lo, hi = stats.bootstrap_ci(hits, n_boot=200, seed=7)

    kept = np.delete(hits, 4, axis=1)
    draws = np.random.default_rng(7).integers(0, kept.shape[1], size=(200, kept.shape[1]))
    reps = []
    for d in draws:
        per_seed = [sum(kept[s, i] for i in d) / len(d) for s in range(3)]
        reps.append(sum(per_seed) / 3)
    assert lo == pytest.approx(np.percentile(reps, 2.5))
    assert hi == pytest.approx(np.percentile(reps, 97.5))
    assert lo <= np.nanmean(kept) <= hi


def test_bootstrap_ci_is_seeded_and_degenerate_for_constant_hits():
    hits = np.array([1, 0, 1, 1, 0, 1, 0, 1.0])
    assert stats.bootstrap_ci(hits, 100, seed=1) == stats.bootstrap_ci(hits, 100, seed=1)
    assert stats.bootstrap_ci(np.ones(6), 50) == (1.0, 1.0)
    with pytest.raises(XiqaError):
        stats.bootstrap_ci(np.array([np.nan, np.nan]), 50)


def test_dom_is_the_absolute_difference_of_means_and_the_linear_kernel_mmd():
    a, b = [0.8, 0.7, 0.9], [0.6, 0.65, 0.5]
    assert stats.dom(a, b) == pytest.approx(abs(np.mean(a) - np.mean(b)))
    assert stats.dom(b, a) == stats.dom(a, b)
    # biased linear-kernel MMD^2 written out with explicit kernel sums
    x = a + b
    k = [[xi * xj for xj in x] for xi in x]
    kaa = sum(k[i][j] for i in range(3) for j in range(3)) / 9
    kbb = sum(k[i][j] for i in range(3, 6) for j in range(3, 6)) / 9
    kab = sum(k[i][j] for i in range(3) for j in range(3, 6)) / 9
    assert math.sqrt(kaa + kbb - 2 * kab) == pytest.approx(stats.dom(a, b))


def _rbf_mmd2_plain(a, b, sigma):
    def k(x, y):
        return math.exp(-((x - y) ** 2) / (2 * sigma**2))

    kaa = sum(k(x, y) for x in a for y in a) / len(a) ** 2
    kbb = sum(k(x, y) for x in b for y in b) / len(b) ** 2
    kab = sum(k(x, y) for x in a for y in b) / (len(a) * len(b))
    return kaa + kbb - 2 * kab


def test_mmd_rbf_uses_the_median_heuristic_and_an_exact_permutation_test():
    a, b = [0.8, 0.7, 0.9], [0.6, 0.65, 0.5]
    pooled = a + b
    dists = [abs(x - y) for x, y in itertools.combinations(pooled, 2)]
    sigma = float(np.median(dists))
    res = stats.mmd_rbf(a, b, permutations=1000)
    assert res.bandwidth == pytest.approx(sigma)
    assert res.mmd == pytest.approx(math.sqrt(_rbf_mmd2_plain(a, b, sigma)))
    assert res.exact and res.permutations == 20
    # every relabelling of 6 values into 3 + 3, counted by hand
    obs = _rbf_mmd2_plain(a, b, sigma)
    count = 0
    for combo in itertools.combinations(range(6), 3):
        ga = [pooled[i] for i in combo]
        gb = [pooled[i] for i in range(6) if i not in combo]
        count += _rbf_mmd2_plain(ga, gb, sigma) >= obs - 1e-12
    assert res.p_value == pytest.approx(count / 20)
    assert res.p_value == pytest.approx(0.1)  # perfectly separated groups: the two extreme splits


def test_mmd_rbf_monte_carlo_p_value_is_seeded_and_small_for_separated_groups():
    rng = np.random.default_rng(0)
    a = rng.normal(0.8, 0.02, 12)
    b = rng.normal(0.5, 0.02, 12)
    r1 = stats.mmd_rbf(a, b, permutations=200, seed=5)
    r2 = stats.mmd_rbf(a, b, permutations=200, seed=5)
    assert r1 == r2 and not r1.exact and r1.permutations == 200
    assert r1.p_value == pytest.approx(1 / 201)
    same = stats.mmd_rbf(a, a.copy(), permutations=200, seed=5)
    assert same.mmd == pytest.approx(0.0, abs=1e-6) and same.p_value == pytest.approx(1.0)


def test_mmd_of_identical_constant_sets_is_zero_with_p_one():
    res = stats.mmd_rbf([0.5, 0.5], [0.5, 0.5], permutations=100)
    assert res.mmd == 0.0 and res.p_value == 1.0 and res.bandwidth == 1.0


def test_summarise_combines_seed_mean_std_and_image_bootstrap():
    hits = np.array([[1, 0, 1, 1, np.nan], [1, 1, 1, 0, np.nan]])
    s = stats.summarise(hits, n_boot=100, seed=0)
    assert s.mean == pytest.approx((0.75 + 0.75) / 2)
    assert s.std == pytest.approx(0.0)
    assert s.n_seeds == 2 and s.n_images == 4
    assert 0 <= s.ci_low <= s.mean <= s.ci_high <= 1
