"""The names the evaluation/report stages log and ``xiqa report`` reads back: one place.

Runs (MLflow, SPEC 7):

- **evaluation** run, experiment ``xiqa-<ds>``, one per model version: tags ``xiqa.kind =
  evaluation``, ``dataset``, ``arch``, ``condition``, ``seed``, ``model_name``,
  ``model_version``, ``model_run_id``; metrics ``pg/<method>`` (smoothing off),
  ``pg_smooth/<method>`` (on), ``n_images``, ``constant_maps/<method>``,
  ``constant_maps_smooth/<method>``, ``constant_maps``, ``tau_px`` (τ in input pixels, also a
  param next to ``tolerance`` and ``tolerance_at``), the no-information baselines
  ``baseline/chance`` and ``baseline/centre`` (independent of the model, the method and
  smoothing); artifacts ``per_image.csv``, ``baselines.csv`` (:data:`BASELINE_COLUMNS`) and
  the figure sample's maps, ``figure_maps.npz``.
- **aggregate** run, experiment ``xiqa-study``, one per dataset × arch × condition of one report
  execution (tag ``xiqa.study``): ``pg_mean/<m>``, ``pg_std/<m>``, ``pg_ci_low/<m>``,
  ``pg_ci_high/<m>`` (smoothed maps, the paper's comparisons) and the same with ``pg_raw_``
  (unsmoothed); ``n_seeds``, ``n_images``; for ``trained`` also ``test_accuracy_mean/std``,
  ``test_auc_mean/std``; ``tau_px`` and the baselines ``baseline_mean/<b>``,
  ``baseline_ci_low/<b>``, ``baseline_ci_high/<b>`` for ``<b>`` in :data:`BASELINES` (no std:
  every seed scores the same images and boxes). A condition whose models were skipped has tag
  ``xiqa.status = skipped`` and ``xiqa.reason``.
- **study** run, experiment ``xiqa-study``, one per dataset: ``dom/<m>``, ``mmd/<m>``,
  ``mmd_p/<m>`` for every pair of architectures (suffix ``/<archA>~<archB>`` when a dataset has
  more than two), and the figures as artifacts under ``figures/``.
"""

from __future__ import annotations

# Table order follows the paper (Table 2's first three rows are the gradient methods).
METHODS: tuple[str, ...] = (
    "input_x_gradient",
    "guided_backprop",
    "guided_gradcam",
    "gradcam",
    "normgrad_scaling_single",
    "normgrad_conv1x1_single",
    "normgrad_conv3x3_single",
    "normgrad_scaling_multi",
    "normgrad_conv1x1_multi",
    "normgrad_conv3x3_multi",
)

METHOD_LABELS: dict[str, str] = {
    "input_x_gradient": "Input × Gradient",
    "guided_backprop": "Guided Backprop",
    "guided_gradcam": "Guided Grad-CAM",
    "gradcam": "Grad-CAM",
    "normgrad_scaling_single": "NormGrad scaling (single)",
    "normgrad_conv1x1_single": "NormGrad conv1x1 (single)",
    "normgrad_conv3x3_single": "NormGrad conv3x3 (single)",
    "normgrad_scaling_multi": "NormGrad scaling (multi)",
    "normgrad_conv1x1_multi": "NormGrad conv1x1 (multi)",
    "normgrad_conv3x3_multi": "NormGrad conv3x3 (multi)",
}

CONDITIONS: tuple[str, ...] = ("sr", "fr", "trained")  # table column order, as in Tables 3–4
CONDITION_LABELS = {"sr": "SR", "fr": "FR", "trained": "Trained"}
ARCH_LABELS = {
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "efficientnet_b0": "EfficientNet-B0",
    "efficientnet-b0": "EfficientNet-B0 (efficientnet-pytorch)",
}
DATASET_LABELS = {"objectcxr": "Object-CXR", "lvot": "LVOT"}

# tags
KIND = "xiqa.kind"
STUDY = "xiqa.study"
STATUS = "xiqa.status"
REASON = "xiqa.reason"
STUDY_EXPERIMENT = "xiqa-study"

# per-image CSV columns (one row per scored image × method × smoothing flag)
PER_IMAGE_COLUMNS = ("image_id", "method", "smoothed", "target", "predicted", "probability",
                     "label", "peak_x", "peak_y", "hit", "constant")

# No-information baselines (SPEC 5): what a map without information scores at the same τ.
# ``chance``: the expected hit of a peak drawn uniformly over the input pixels; ``centre``: the
# hit of a peak at the centre pixel ((W - 1) // 2, (H - 1) // 2). Table order and labels:
BASELINES: tuple[str, ...] = ("chance", "centre")
BASELINE_LABELS = {"chance": "chance (uniform peak)", "centre": "centre peak"}
# baselines.csv columns (one row per scored image): ``chance`` in [0, 1] (a fraction of pixels),
# ``centre`` 1 / 0
BASELINE_COLUMNS = ("image_id", *BASELINES)
TAU = "tau_px"  # metric and param: the Pointing Game τ in input pixels
TAU_LABEL = "τ (input pixels)"  # the tables' row stating it


def experiment_name(dataset: str) -> str:
    return f"xiqa-{dataset}"


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def pg_metric(method: str, smoothed: bool) -> str:
    """Evaluation-run metric: ``pg_smooth/<m>`` (smoothing on) or ``pg/<m>`` (off)."""
    return f"{'pg_smooth' if smoothed else 'pg'}/{method}"


def agg_metric(stat: str, method: str, smoothed: bool = True) -> str:
    """Aggregate-run metric, ``stat`` in mean/std/ci_low/ci_high: ``pg_mean/<m>`` (smoothed) or
    ``pg_raw_mean/<m>`` (unsmoothed)."""
    return f"pg_{'' if smoothed else 'raw_'}{stat}/{method}"


def baseline_metric(baseline: str) -> str:
    """Evaluation-run metric of a no-information baseline: ``baseline/<b>``."""
    return f"baseline/{baseline}"


def agg_baseline_metric(stat: str, baseline: str) -> str:
    """Aggregate-run metric, ``stat`` in mean/ci_low/ci_high: ``baseline_mean/<b>`` etc."""
    return f"baseline_{stat}/{baseline}"


def pair_suffix(arch_a: str, arch_b: str, n_archs: int) -> str:
    return "" if n_archs <= 2 else f"/{arch_a}~{arch_b}"
