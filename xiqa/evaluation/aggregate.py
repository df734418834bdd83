"""From per-image Pointing Game tables to the study's aggregates (SPEC 6).

Pure functions of pandas frames in the per-image layout (:data:`xiqa.schema.
PER_IMAGE_COLUMNS`), returning flat ``{metric name: float}`` dicts in the names the aggregate
and study runs log (:mod:`xiqa.schema`). Nothing here is ever NaN: a missing std (one
seed) is left out, an empty set raises :class:`XiqaError`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from xiqa.errors import XiqaError
from xiqa.evaluation import stats
from xiqa import schema as S


def hits_matrix(frames: Sequence[pd.DataFrame], method: str, smoothed: bool) -> np.ndarray:
    """float ``[S, N]``: row s = model s's 1/0 hits of ``method`` on the union of scored images
    (sorted by image id; NaN where a model did not score an image)."""
    parts = []
    for f in frames:
        rows = f[(f["method"] == method) & (f["smoothed"].astype(int) == int(smoothed))]
        if rows["image_id"].duplicated().any():
            raise XiqaError(f"per-image table: {method} (smoothed={smoothed}) lists an image twice")
        parts.append(rows.set_index("image_id")["hit"].astype(float))
    if not parts:
        raise XiqaError(f"no per-image tables to aggregate for {method}")
    table = pd.concat(parts, axis=1, sort=True)
    return table.to_numpy(dtype=np.float64).T


def per_seed_accuracies(frames: Sequence[pd.DataFrame], method: str, smoothed: bool) -> list[float]:
    return [stats.accuracy(row, f"Pointing Game of {method}") for row in hits_matrix(frames, method, smoothed)]


def condition_metrics(frames: Sequence[pd.DataFrame], methods: Sequence[str], n_boot: int = 1000,
                      seed: int = 0) -> dict[str, float]:
    """Aggregate-run metrics of one dataset × arch × condition over its seeds' per-image tables:
    ``pg_mean/<m>``, ``pg_std/<m>`` (ddof = 1; absent for one seed), ``pg_ci_low/<m>``,
    ``pg_ci_high/<m>`` for smoothed maps, ``pg_raw_*`` for unsmoothed, and ``n_seeds``,
    ``n_images``, ``constant_maps`` (summed over seeds, methods and both smoothing flags)."""
    if not frames:
        raise XiqaError("no evaluated model to aggregate")
    out: dict[str, float] = {"n_seeds": float(len(frames))}
    n_images = None
    for smoothed in (True, False):
        for m in methods:
            s = stats.summarise(hits_matrix(frames, m, smoothed), n_boot=n_boot, seed=seed,
                                what=f"Pointing Game of {m}")
            out[S.agg_metric("mean", m, smoothed)] = s.mean
            if s.std is not None:
                out[S.agg_metric("std", m, smoothed)] = s.std
            out[S.agg_metric("ci_low", m, smoothed)] = s.ci_low
            out[S.agg_metric("ci_high", m, smoothed)] = s.ci_high
            n_images = s.n_images if n_images is None else min(n_images, s.n_images)
    out["n_images"] = float(n_images or 0)
    out["constant_maps"] = float(sum(int(f["constant"].sum()) for f in frames))
    return out


def baseline_metrics(frames: Sequence[pd.DataFrame], n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Aggregate-run metrics of the no-information baselines from the seeds' ``baselines.csv``
    tables (:data:`xiqa.schema.BASELINE_COLUMNS`): ``baseline_mean/<b>`` (the mean over
    the scored images) and ``baseline_ci_low/<b>``, ``baseline_ci_high/<b>`` (bootstrap over
    images, as for the methods). Every seed scores the same images and boxes, so the tables
    must agree; a disagreement (evaluations at different τ or on different splits) is an error,
    and there is no std over seeds."""
    if not frames:
        raise XiqaError("no baselines table to aggregate")
    tables = []
    for f in frames:
        missing = [c for c in S.BASELINE_COLUMNS if c not in f.columns]
        if missing:
            raise XiqaError(f"baselines table lacks column(s) {', '.join(missing)}: rerun `dvc repro evaluate`")
        if f["image_id"].duplicated().any():
            raise XiqaError("baselines table lists an image twice")
        tables.append(f.set_index("image_id")[list(S.BASELINES)].astype(float).sort_index())
    first = tables[0]
    for other in tables[1:]:
        if not (other.index.equals(first.index) and np.array_equal(other.to_numpy(), first.to_numpy())):
            raise XiqaError("the models of one condition disagree on the no-information baselines (scored "
                            "images, boxes or τ differ): rerun `dvc repro evaluate`")
    out: dict[str, float] = {}
    for b in S.BASELINES:
        s = stats.summarise(first[b].to_numpy(), n_boot=n_boot, seed=seed, what=f"baseline {b}")
        out[S.agg_baseline_metric("mean", b)] = s.mean
        out[S.agg_baseline_metric("ci_low", b)] = s.ci_low
        out[S.agg_baseline_metric("ci_high", b)] = s.ci_high
    return out


def classification_metrics(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``test_accuracy_mean/std``, ``test_auc_mean/std`` of the trained seeds (values the training
    runs logged); a metric no seed logged is left out."""
    out: dict[str, float] = {}
    for name in ("test_accuracy", "test_auc"):
        values = [float(d[name]) for d in per_seed if d.get(name) is not None and np.isfinite(d[name])]
        if not values:
            continue
        mean, std = stats.mean_std(values, name)
        out[f"{name}_mean"] = mean
        if std is not None:
            out[f"{name}_std"] = std
    return out


def architecture_metrics(per_arch: Mapping[str, Sequence[pd.DataFrame]], methods: Sequence[str],
                         permutations: int = 1000, seed: int = 0) -> dict[str, float]:
    """Study-run metrics of one dataset from its trained models' per-image tables, per arch:
    ``dom/<m>`` = |mean(A) − mean(B)| of per-seed smoothed accuracies, ``mmd/<m>`` and
    ``mmd_p/<m>`` (RBF kernel, permutation p-value) for every pair of architectures (with a
    ``/<A>~<B>`` suffix when there are more than two). Empty with fewer than two archs."""
    archs = list(per_arch)
    out: dict[str, float] = {}
    accs = {a: {m: per_seed_accuracies(per_arch[a], m, True) for m in methods} for a in archs}
    for i, a in enumerate(archs):
        for b in archs[i + 1:]:
            sfx = S.pair_suffix(a, b, len(archs))
            for m in methods:
                out[f"dom/{m}{sfx}"] = stats.dom(accs[a][m], accs[b][m])
                r = stats.mmd_rbf(accs[a][m], accs[b][m], permutations=permutations, seed=seed)
                out[f"mmd/{m}{sfx}"] = r.mmd
                out[f"mmd_p/{m}{sfx}"] = r.p_value
    return out
