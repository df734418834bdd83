"""Study statistics (SPEC 6): mean ± std over seeds, bootstrap CIs over images, DoM and MMD.

Conventions used everywhere in xiqa's tables:

- **std** is the sample standard deviation, ``ddof = 1`` (the spread over seeds, as in the
  paper's Tables 3–7). With a single seed it is undefined and :func:`mean_std` returns ``None``
  for it (tables print "n/a"), never NaN.
- **Bootstrap CI** (beyond the paper): the percentile interval of the seed-averaged accuracy
  when the *test images* are resampled with replacement; every seed's model is scored on the
  same resampled images, so the interval reflects the finite test set, not the seed spread.
- **DoM** = ``|mean(a) − mean(b)|`` over per-seed accuracies; it is the MMD with a linear kernel
  in one dimension (biased estimate: ``MMD²_lin = (mean(a) − mean(b))²``).
- **MMD (RBF)** is computed on the same per-seed accuracies as DoM, with a Gaussian kernel
  and the median heuristic, plus a permutation p-value.

All functions are pure NumPy; randomness comes only from the ``seed`` argument.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xiqa.errors import XiqaError


def _finite_1d(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise XiqaError(f"{what}: no values to summarise (an empty set has no accuracy)")
    if not np.all(np.isfinite(arr)):
        raise XiqaError(f"{what}: values must be finite, got {arr.tolist()}")
    return arr


def mean_std(values: Sequence[float] | np.ndarray, what: str = "values") -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof = 1``) of finite values.

    Returns ``(mean, std)``; ``std`` is ``None`` when there is a single value (ddof = 1 is
    undefined there). An empty or non-finite input raises :class:`XiqaError`.
    """
    arr = _finite_1d(values, what)
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return mean, std


def accuracy(hits: Sequence[float] | np.ndarray, what: str = "hits") -> float:
    """Pointing Game accuracy ``T / (T + F)`` of 1/0 hits; NaN entries (no box) are left out.

    An input with no scored image raises :class:`XiqaError` (an empty set is not a NaN).
    """
    arr = np.asarray(hits, dtype=np.float64).ravel()
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        raise XiqaError(f"{what}: no image with a box was scored, so there is no accuracy")
    return float(arr.mean())


def bootstrap_ci(
    hits: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval over images of the (seed-averaged) accuracy.

    ``hits``: float ``[N]`` or ``[S, N]`` of 1/0 (S seeds or models scored on the same N test
    images, columns aligned). Columns containing NaN (images without a box) are dropped. Each of
    the ``n_boot`` replicates draws N image indices with replacement (one draw shared by all
    rows), computes every row's accuracy on them and averages over rows. Returns the
    ``(1 − level) / 2`` and ``(1 + level) / 2`` percentiles (NumPy's linear interpolation).
    Deterministic for a given ``seed``.
    """
    arr = np.asarray(hits, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise XiqaError(f"bootstrap: expected hits of shape [N] or [S, N], got {arr.shape}")
    arr = arr[:, ~np.isnan(arr).any(axis=0)]
    if arr.shape[1] == 0 or arr.shape[0] == 0:
        raise XiqaError("bootstrap: no image with a box was scored, so there is no interval")
    if not 0 < level < 1:
        raise XiqaError(f"bootstrap: level must lie in (0, 1), got {level}")
    n = arr.shape[1]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    # [B, S]: each replicate's per-row accuracy; then the mean over rows
    stats = arr[:, idx].mean(axis=2).mean(axis=0)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def dom(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Difference of Means, ``|mean(a) − mean(b)|`` (the paper's DoM, Tables 5–6)."""
    return abs(float(_finite_1d(a, "DoM first set").mean()) - float(_finite_1d(b, "DoM second set").mean()))


def median_bandwidth(x: np.ndarray) -> float:
    """Median heuristic: the median of the non-zero pairwise distances ``|x_i − x_j|, i < j``.

    All-equal data (no non-zero distance) gets bandwidth 1.0; the MMD is 0 then anyway.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    d = np.abs(x[:, None] - x[None, :])[np.triu_indices(x.size, k=1)]
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def _mmd2_biased(k: np.ndarray, in_a: np.ndarray) -> float:
    """Biased (V-statistic) MMD² from a pooled kernel matrix and a boolean group mask."""
    in_b = ~in_a
    kaa = k[np.ix_(in_a, in_a)].mean()
    kbb = k[np.ix_(in_b, in_b)].mean()
    kab = k[np.ix_(in_a, in_b)].mean()
    return float(kaa + kbb - 2.0 * kab)


@dataclass(frozen=True)
class MMDResult:
    """The maximum mean discrepancy of two samples and its permutation p-value."""
    mmd: float  # sqrt of the biased MMD² (>= 0)
    p_value: float  # permutation p-value of observing an MMD at least this large
    bandwidth: float  # the RBF kernel's sigma (median heuristic on the pooled sample)
    permutations: int  # how many group relabellings the p-value is based on
    exact: bool  # True: every relabelling was enumerated


def mmd_rbf(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    permutations: int = 1000,
    seed: int = 0,
    bandwidth: float | None = None,
) -> MMDResult:
    """RBF-kernel MMD between two sets of scalars, with a permutation p-value.

    The sets are the **per-seed Pointing Game accuracies** of two architectures (not per-image
    hits): that is the sample DoM summarises, so DoM is exactly the linear-kernel member of
    the same family and the two numbers sit side by side in Tables 5–6. Per-image hits would
    be 0/1 values whose RBF-MMD is a monotone function of the difference of hit rates (nothing
    beyond DoM), and they would treat the seeds' shared test images as independent samples.

    Kernel ``k(x, y) = exp(−(x − y)² / (2σ²))`` with ``σ`` from :func:`median_bandwidth` on the
    pooled sample (computed once, so it is invariant under relabelling). The statistic is the
    biased estimate ``MMD² = mean K_aa + mean K_bb − 2 mean K_ab``; returned as ``sqrt``.

    p-value: the share of group relabellings whose MMD is ≥ the observed one. When the number
    of distinct relabellings ``C(n_a + n_b, n_a)`` is at most ``permutations`` they are all
    enumerated (exact test; with 3 + 3 seeds there are 20, so p ≥ 0.1 — few seeds cannot give
    a small p-value). Otherwise ``permutations`` random relabellings (seeded) are drawn and
    ``p = (1 + #≥) / (1 + permutations)``.
    """
    xa = _finite_1d(a, "MMD first set")
    xb = _finite_1d(b, "MMD second set")
    pooled = np.concatenate([xa, xb])
    sigma = float(bandwidth) if bandwidth is not None else median_bandwidth(pooled)
    if sigma <= 0:
        raise XiqaError(f"MMD: the kernel bandwidth must be positive, got {sigma}")
    k = np.exp(-((pooled[:, None] - pooled[None, :]) ** 2) / (2.0 * sigma**2))
    n, na = pooled.size, xa.size
    in_a = np.zeros(n, dtype=bool)
    in_a[:na] = True
    observed = _mmd2_biased(k, in_a)
    tol = 1e-12  # relabellings that tie with the observed statistic count as "at least as large"
    n_splits = math.comb(n, na)
    if n_splits <= permutations:
        count = 0
        for combo in itertools.combinations(range(n), na):
            mask = np.zeros(n, dtype=bool)
            mask[list(combo)] = True
            count += _mmd2_biased(k, mask) >= observed - tol
        p, used, exact = count / n_splits, n_splits, True
    else:
        rng = np.random.default_rng(seed)
        count = 0
        for _ in range(permutations):
            mask = np.zeros(n, dtype=bool)
            mask[rng.permutation(n)[:na]] = True
            count += _mmd2_biased(k, mask) >= observed - tol
        p, used, exact = (1 + count) / (1 + permutations), permutations, False
    return MMDResult(mmd=math.sqrt(max(observed, 0.0)), p_value=float(p), bandwidth=sigma,
                     permutations=used, exact=exact)


@dataclass(frozen=True)
class Summary:
    """One table cell: a method's accuracy over seeds, with its image-bootstrap interval."""

    mean: float
    std: float | None  # ddof = 1; None with a single seed
    n_seeds: int
    ci_low: float
    ci_high: float
    n_images: int


def summarise(
    hits: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    what: str = "accuracy",
) -> Summary:
    """Mean ± std over seeds of per-seed accuracies and the bootstrap CI over images.

    ``hits``: float ``[S, N]`` of 1/0/NaN, one row per seed, columns the same test images.
    """
    arr = np.asarray(hits, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    accs = [accuracy(row, what) for row in arr]
    mean, std = mean_std(accs, what)
    lo, hi = bootstrap_ci(arr, n_boot=n_boot, seed=seed, level=level)
    n_images = int((~np.isnan(arr).any(axis=0)).sum())
    return Summary(mean=mean, std=std, n_seeds=len(accs), ci_low=lo, ci_high=hi, n_images=n_images)
