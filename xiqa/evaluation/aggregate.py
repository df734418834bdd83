"""From per-image Pointing Game tables to the study's aggregates (SPEC 6).

Pure functions of pandas frames in the per-image layout (:data:`xiqa.schema.
PER_IMAGE_COLUMNS`), returning flat ``{metric name: float}`` dicts in the names the aggregate
and study runs log (:mod:`xiqa.schema`). Nothing here is ever NaN: a missing std (one
seed) is left out, an empty set raises :class:`XiqaError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.evaluation import stats


def hits_matrix(frames: Sequence[pd.DataFrame], method: str, smoothed: bool, column: str = "hit") -> np.ndarray:
    """Float ``[S, N]``: row s = model s's 1/0 hits of ``method`` on the union of scored images
    (sorted by image id; NaN where a model did not score an image). ``column``: another
    per-image value instead of ``hit`` (a localisation metric, NaN where the map was constant)."""
    parts = []
    for f in frames:
        rows = f[(f["method"] == method) & (f["smoothed"].astype(int) == int(smoothed))]
        if rows["image_id"].duplicated().any():
            raise XiqaError(f"per-image table: {method} (smoothed={smoothed}) lists an image twice")
        parts.append(rows.set_index("image_id")[column].astype(float))
    if not parts:
        raise XiqaError(f"no per-image tables to aggregate for {method}")
    table = pd.concat(parts, axis=1, sort=True)
    return table.to_numpy(dtype=np.float64).T


def per_seed_accuracies(frames: Sequence[pd.DataFrame], method: str, smoothed: bool,
                        column: str = "hit") -> list[float]:
    """One Pointing Game accuracy per seed (per table of ``frames``) of ``method``."""
    return [stats.accuracy(row, f"{column} of {method}") for row in hits_matrix(frames, method, smoothed, column)]


def _summarisable(matrix: np.ndarray) -> bool:
    """A localisation matrix ``[S, N]`` has a mean for every seed and a bootstrap interval: each
    row has a non-NaN value and some image is non-NaN in every row (constant maps are NaN)."""
    nan = np.isnan(matrix)
    return bool((~nan).any(axis=1).all() and (~nan.any(axis=0)).any())


def localisation_metrics(frames: Sequence[pd.DataFrame], methods: Sequence[str], n_boot: int = 1000,
                         seed: int = 0) -> dict[str, float]:
    """Aggregate-run localisation metrics over the seeds' per-image tables, summarised exactly
    like the Pointing Game (:func:`xiqa.evaluation.stats.summarise`: per-seed means over the
    images whose map is not constant, mean ± std over seeds with ddof = 1, bootstrap CI over the
    images scored by every seed): ``<k>_mean/<m>``, ``<k>_std/<m>``, ``<k>_ci_low/<m>``,
    ``<k>_ci_high/<m>`` for smoothed maps and ``<k>_raw_*`` for unsmoothed, k in
    :data:`xiqa.schema.LOC_METRICS`. A metric whose maps were constant for every image of
    a seed is left out (counted in ``constant_maps``). Per-image tables without the columns
    (evaluated before the metrics existed) are an error."""
    out: dict[str, float] = {}
    for f in frames:
        missing = [k for k in S.LOC_METRICS if k not in f.columns]
        if missing:
            raise XiqaError(f"per-image table lacks column(s) {', '.join(missing)}: rerun `dvc repro evaluate`")
    for smoothed in (True, False):
        for m in methods:
            for k in S.LOC_METRICS:
                matrix = hits_matrix(frames, m, smoothed, k)
                if not _summarisable(matrix):
                    continue
                s = stats.summarise(matrix, n_boot=n_boot, seed=seed, what=f"{k} of {m}")
                out[S.loc_agg_metric(k, "mean", m, smoothed)] = s.mean
                if s.std is not None:
                    out[S.loc_agg_metric(k, "std", m, smoothed)] = s.std
                out[S.loc_agg_metric(k, "ci_low", m, smoothed)] = s.ci_low
                out[S.loc_agg_metric(k, "ci_high", m, smoothed)] = s.ci_high
    return out


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
    images, as for the methods); the localisation baselines likewise as
    ``baseline_<k>_mean/<b>`` etc. (:func:`xiqa.schema.loc_agg_baseline_metric`). Every seed
    scores the same images and boxes, so the tables must agree; a disagreement (evaluations
    at different τ or on different splits) is an error, and there is no std over seeds."""
    if not frames:
        raise XiqaError("no baselines table to aggregate")
    tables = []
    for f in frames:
        missing = [c for c in S.BASELINE_COLUMNS if c not in f.columns]
        if missing:
            raise XiqaError(f"baselines table lacks column(s) {', '.join(missing)}: rerun `dvc repro evaluate`")
        if f["image_id"].duplicated().any():
            raise XiqaError("baselines table lists an image twice")
        tables.append(f.set_index("image_id")[list(S.BASELINE_COLUMNS[1:])].astype(float).sort_index())
    first = tables[0]
    for other in tables[1:]:
        if not (other.index.equals(first.index) and np.array_equal(other.to_numpy(), first.to_numpy(), equal_nan=True)):
            raise XiqaError("the models of one condition disagree on the no-information baselines (scored "
                            "images, boxes or τ differ): rerun `dvc repro evaluate`")
    out: dict[str, float] = {}
    for b in S.BASELINES:
        s = stats.summarise(first[b].to_numpy(), n_boot=n_boot, seed=seed, what=f"baseline {b}")
        out[S.agg_baseline_metric("mean", b)] = s.mean
        out[S.agg_baseline_metric("ci_low", b)] = s.ci_low
        out[S.agg_baseline_metric("ci_high", b)] = s.ci_high
    for b in S.LOC_BASELINES:
        for k in S.LOC_METRICS:
            values = first[f"{b}_{k}"].to_numpy()
            if not _summarisable(values[None, :]):
                continue
            s = stats.summarise(values, n_boot=n_boot, seed=seed, what=f"baseline {b} {k}")
            out[S.loc_agg_baseline_metric(k, "mean", b)] = s.mean
            out[S.loc_agg_baseline_metric(k, "ci_low", b)] = s.ci_low
            out[S.loc_agg_baseline_metric(k, "ci_high", b)] = s.ci_high
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
    ``/<A>~<B>`` suffix when there are more than two); the same for the smoothed localisation
    metrics' per-seed means as ``<k>_dom/<m>``, ``<k>_mmd/<m>``, ``<k>_mmd_p/<m>`` (left out where
    a seed has no non-constant map). Empty with fewer than two archs."""
    archs = list(per_arch)
    out: dict[str, float] = {}
    for column, prefix in (("hit", ""), *((k, f"{k}_") for k in S.LOC_METRICS)):
        accs = {a: {m: _per_seed(per_arch[a], m, column) for m in methods} for a in archs}
        for i, a in enumerate(archs):
            for b in archs[i + 1:]:
                sfx = S.pair_suffix(a, b, len(archs))
                for m in methods:
                    acc_a, acc_b = accs[a][m], accs[b][m]
                    if acc_a is None or acc_b is None:
                        continue
                    out[f"{prefix}dom/{m}{sfx}"] = stats.dom(acc_a, acc_b)
                    r = stats.mmd_rbf(acc_a, acc_b, permutations=permutations, seed=seed)
                    out[f"{prefix}mmd/{m}{sfx}"] = r.mmd
                    out[f"{prefix}mmd_p/{m}{sfx}"] = r.p_value
    return out


def _per_seed(frames: Sequence[pd.DataFrame], method: str, column: str) -> list[float] | None:
    """Per-seed smoothed means of ``column``; None for a localisation metric a seed cannot score."""
    if column != "hit" and (column not in frames[0].columns
                            or not np.isfinite(hits_matrix(frames, method, True, column)).any(axis=1).all()):
        return None
    return per_seed_accuracies(frames, method, True, column)


def sanity_metrics(summaries: Sequence[Mapping], methods: Sequence[str]) -> dict[str, float]:
    """Trained-aggregate metrics of the sanity checks from the seeds' ``sanity`` summaries
    (:func:`xiqa.evaluation.sanity_run.summarise`): per method the similarity to the trained maps
    after the full cascade (``mprt_spearman_final``, ``mprt_ssim_final``) and the random-logit
    SSIM, each as ``<stat>_mean/<m>`` and ``<stat>_std/<m>`` over seeds (ddof = 1; no std for
    one seed). A seed whose maps were all constant has no value and is left out."""
    out: dict[str, float] = {}
    for m in methods:
        values: dict[str, list[float]] = {k: [] for k in S.SANITY_STATS}
        for summary in summaries:
            curve = summary["mprt"].get(m)
            if curve is not None:
                final = summary["final_step"]
                for stat, sim in (("mprt_spearman_final", "spearman"), ("mprt_ssim_final", "ssim")):
                    if curve[sim][final] is not None:
                        values[stat].append(float(curve[sim][final]))
            if summary["random_logit_ssim"].get(m) is not None:
                values["random_logit_ssim"].append(float(summary["random_logit_ssim"][m]))
        for stat, v in values.items():
            if not v:
                continue
            mean, std = stats.mean_std(v, f"{stat} of {m}")
            out[S.sanity_metric(stat, "mean", m)] = mean
            if std is not None:
                out[S.sanity_metric(stat, "std", m)] = std
    return out


def sanity_curves(summaries: Sequence[Mapping], methods: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """``{method: {"spearman": [...], "ssim": [...]}}``: the MPRT similarity per randomisation
    step (0 = trained) averaged over the seeds that have a value at that step (NaN where none)."""
    out: dict[str, dict[str, list[float]]] = {}
    for m in methods:
        curves = [s["mprt"][m] for s in summaries if m in s["mprt"]]
        if not curves:
            continue
        out[m] = {}
        for sim in ("spearman", "ssim"):
            table = np.array([[np.nan if v is None else v for v in c[sim]] for c in curves], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                counts = (~np.isnan(table)).sum(0)
                sums = np.nansum(table, axis=0)
            out[m][sim] = [float(x) for x in np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)]
    return out
