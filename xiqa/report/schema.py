"""The names the evaluation/report stages log and ``xiqa report`` reads back: one place.

Runs (MLflow, SPEC 7):

- **evaluation** run, experiment ``xiqa-<ds>``, one per model version: tags ``xiqa.kind =
  evaluation``, ``dataset``, ``arch``, ``condition``, ``seed``, ``model_name``,
  ``model_version``, ``model_run_id``; metrics ``pg/<method>`` (smoothing off),
  ``pg_smooth/<method>`` (on), ``n_images``, ``constant_maps/<method>``,
  ``constant_maps_smooth/<method>``, ``constant_maps``; artifact ``per_image.csv`` (+ the
  figure sample's maps, ``figure_maps.npz``).
- **aggregate** run, experiment ``xiqa-study``, one per dataset × arch × condition of one report
  execution (tag ``xiqa.study``): ``pg_mean/<m>``, ``pg_std/<m>``, ``pg_ci_low/<m>``,
  ``pg_ci_high/<m>`` (smoothed maps, the paper's comparisons) and the same with ``pg_raw_``
  (unsmoothed); ``n_seeds``, ``n_images``; for ``trained`` also ``test_accuracy_mean/std``,
  ``test_auc_mean/std``. A condition whose models were skipped has tag ``xiqa.status = skipped``
  and ``xiqa.reason``.
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


def pair_suffix(arch_a: str, arch_b: str, n_archs: int) -> str:
    return "" if n_archs <= 2 else f"/{arch_a}~{arch_b}"
