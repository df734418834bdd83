"""The names the evaluation/report stages log and ``xiqa report`` reads back: one place.

Runs (MLflow, SPEC 7):

- **evaluation** run, experiment ``xiqa-<ds>``, one per model version: tags ``xiqa.kind =
  evaluation``, ``dataset``, ``arch``, ``condition``, ``seed``, ``model_name``,
  ``model_version``, ``model_run_id``; metrics ``pg/<method>`` (smoothing off),
  ``pg_smooth/<method>`` (on), ``n_images``, ``constant_maps/<method>``,
  ``constant_maps_smooth/<method>``, ``constant_maps``, ``tau_px`` (τ in input pixels, also a
  param next to ``tolerance`` and ``tolerance_at``), the no-information baselines
  ``baseline/chance`` and ``baseline/centre`` (independent of the model, the method and
  smoothing), ``skipped_layers/<m>`` for multi-layer NormGrad (layer maps skipped as constant,
  summed over the scored images); artifacts ``per_image.csv``, ``baselines.csv`` (:data:`BASELINE_COLUMNS`) and
  the figure sample's maps, ``figure_maps.npz``. Localisation beyond the Pointing Game (SPEC
  6.1, :data:`LOC_METRICS`): ``mass/<m>``, ``rank/<m>``, ``auc/<m>``, ``topk/<m>`` (smoothed
  maps, like ``pg_smooth``) and ``mass_raw/<m>`` … ``topk_raw/<m>`` (unsmoothed), each the mean
  over the scored images whose map is not constant (a metric with no such image is not
  logged; ``constant_maps*`` count them); their no-information baselines
  ``baseline_mass/<b>`` … ``baseline_topk/<b>`` for ``<b>`` in :data:`LOC_BASELINES`.
- **aggregate** run, experiment ``xiqa-study``, one per dataset × arch × condition of one report
  execution (tag ``xiqa.study``): ``pg_mean/<m>``, ``pg_std/<m>``, ``pg_ci_low/<m>``,
  ``pg_ci_high/<m>`` (smoothed maps, the paper's comparisons) and the same with ``pg_raw_``
  (unsmoothed); ``n_seeds``, ``n_images``; ``test_accuracy_mean/std``, ``test_auc_mean/std`` (of the
  models' training / randomisation runs); ``tau_px`` and the baselines ``baseline_mean/<b>``,
  ``baseline_ci_low/<b>``, ``baseline_ci_high/<b>`` for ``<b>`` in :data:`BASELINES` (no std:
  every seed scores the same images and boxes). Localisation: ``mass_mean/<m>``,
  ``mass_std/<m>``, ``mass_ci_low/<m>``, ``mass_ci_high/<m>`` (smoothed), ``mass_raw_mean/<m>``
  … (unsmoothed), likewise for rank, auc, topk, and the baselines ``baseline_mass_mean/<b>``,
  ``baseline_mass_ci_low/<b>``, ``baseline_mass_ci_high/<b>`` … For ``trained``, the sanity
  checks over seeds (:data:`SANITY_STATS`): ``mprt_spearman_final_mean/<m>``,
  ``mprt_spearman_final_std/<m>``, ``mprt_ssim_final_mean/<m>``, ``mprt_ssim_final_std/<m>``
  (similarity to the trained maps after the full cascade), ``random_logit_ssim_mean/<m>``,
  ``random_logit_ssim_std/<m>``. A condition whose models were skipped has tag
  ``xiqa.status = skipped`` and ``xiqa.reason``.
- **study** run, experiment ``xiqa-study``, one per dataset: ``dom/<m>``, ``mmd/<m>``,
  ``mmd_p/<m>`` for every pair of architectures (suffix ``/<archA>~<archB>`` when a dataset has
  more than two), the same for the smoothed localisation metrics as ``mass_dom/<m>``,
  ``mass_mmd/<m>``, ``mass_mmd_p/<m>`` (rank, auc, topk likewise), and the figures as
  artifacts under ``figures/`` (``sanity-<ds>.png``: the MPRT curves).
- **sanity** run, experiment ``xiqa-<ds>``, one per trained model (stage ``sanity``): tags as an
  evaluation run with ``xiqa.kind = sanity``; metric histories ``mprt_spearman/<m>`` and
  ``mprt_ssim/<m>`` (step = randomised depth, 0 = the trained model), ``random_logit_ssim/<m>``;
  artifacts ``mprt.csv`` and ``random_logit.csv`` (per image).
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import StringConstraints

# --------------------------------------------------------------------------- the study's names
# Each name set is one Literal, the type that params.yaml and the Typer options are checked
# against; the tuple beside it (its values, in order) is what code iterates over.
Dataset = Literal["objectcxr", "lvot"]
DATASETS: tuple[str, ...] = get_args(Dataset)
StudyArch = Literal["resnet34", "resnet50", "efficientnet_b0", "efficientnet-b0"]
ARCHS: tuple[str, ...] = get_args(StudyArch)  # the study's four, with the paper's layer presets
# Any CNN (issue 26): a torchvision classification constructor, an efficientnet-pytorch name or
# a `package.module:callable` factory; checked by form here, resolved when built (models.zoo)
ARCH_PATTERN = r"^(?:[a-z][a-z0-9_]*|efficientnet-b[0-8]|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$"
Arch = Annotated[str, StringConstraints(pattern=ARCH_PATTERN)]
Condition = Literal["sr", "fr", "trained"]  # table column order, as in Tables 3–4
CONDITIONS: tuple[str, ...] = get_args(Condition)
RandomCondition = Literal["sr", "fr"]  # the conditions the `randomise` stage makes
RANDOM_CONDITIONS: tuple[str, ...] = get_args(RandomCondition)
Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = get_args(Split)
ReportFormat = Literal["md", "csv", "latex", "html"]
REPORT_FORMATS: tuple[str, ...] = get_args(ReportFormat)
# Table order follows the paper (Table 2's first three rows are the gradient methods).
Method = Literal[
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
]
METHODS: tuple[str, ...] = get_args(Method)

# The final maps' Gaussian smoothing (paper Table 2): the defaults of evaluate.smooth_sigma and
# evaluate.smooth_kernel, and of every function that smooths without seeing params.yaml
SMOOTH_SIGMA = 1.0  # σ in input pixels
SMOOTH_KERNEL = 11  # side of the square kernel in input pixels

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

# Localisation beyond the Pointing Game (xiqa.evaluation.localisation.METRICS, SPEC 6.1)
LOC_METRICS: tuple[str, ...] = ("mass", "rank", "auc", "topk")
LOC_METRIC_LABELS = {"mass": "mass", "rank": "rank", "auc": "AUC", "topk": "top-k"}
LOC_BASELINES: tuple[str, ...] = ("uniform", "centre_gaussian")
LOC_BASELINE_LABELS = {"uniform": "uniform map", "centre_gaussian": "centre Gaussian map"}

# per-image CSV columns (one row per scored image × method × smoothing flag); the localisation
# metrics are NaN where the map is constant (``constant`` = 1)
PER_IMAGE_COLUMNS = ("image_id", "method", "smoothed", "target", "predicted", "probability",
                     "label", "peak_x", "peak_y", "hit", "constant", *LOC_METRICS)

# No-information baselines (SPEC 5): what a map without information scores at the same τ.
# ``chance``: the expected hit of a peak drawn uniformly over the input pixels; ``centre``: the
# hit of a peak at the centre pixel ((W - 1) // 2, (H - 1) // 2). Table order and labels:
BASELINES: tuple[str, ...] = ("chance", "centre")
BASELINE_LABELS = {"chance": "chance (uniform peak)", "centre": "centre peak"}
# baselines.csv columns (one row per scored image): ``chance`` in [0, 1] (a fraction of pixels),
# ``centre`` 1 / 0
# and ``<b>_<metric>`` for b in LOC_BASELINES, metric in LOC_METRICS (floats)
BASELINE_COLUMNS = ("image_id", *BASELINES, *(f"{b}_{k}" for b in LOC_BASELINES for k in LOC_METRICS))
TAU = "tau_px"  # metric and param: the Pointing Game τ in input pixels
TAU_LABEL = "τ (input pixels)"  # the tables' row stating it


def method_label(method: str) -> str:
    """The display label of ``method`` (the name itself when it has none)."""
    return METHOD_LABELS.get(method, method)


def pg_metric(method: str, smoothed: bool) -> str:
    """Evaluation-run metric: ``pg_smooth/<m>`` (smoothing on) or ``pg/<m>`` (off)."""
    return f"{'pg_smooth' if smoothed else 'pg'}/{method}"


def agg_metric(stat: str, method: str, smoothed: bool = True) -> str:
    """Aggregate-run metric, ``stat`` in mean/std/ci_low/ci_high: ``pg_mean/<m>`` (smoothed) or
    ``pg_raw_mean/<m>`` (unsmoothed)."""
    return f"pg_{'' if smoothed else 'raw_'}{stat}/{method}"


def not_applicable_tag(method: str) -> str:
    """Evaluation / sanity-run tag of a method that cannot run on the model (issue 26: Guided
    Backprop on GELU / Hardswish networks): ``not_applicable/<m>`` = one sentence why."""
    return f"not_applicable/{method}"


def skipped_metric(method: str) -> str:
    """Evaluation-run metric of a multi-layer NormGrad method: ``skipped_layers/<m>``."""
    return f"skipped_layers/{method}"


def baseline_metric(baseline: str) -> str:
    """Evaluation-run metric of a no-information baseline: ``baseline/<b>``."""
    return f"baseline/{baseline}"


def agg_baseline_metric(stat: str, baseline: str) -> str:
    """Aggregate-run metric, ``stat`` in mean/ci_low/ci_high: ``baseline_mean/<b>`` etc."""
    return f"baseline_{stat}/{baseline}"


def loc_metric(metric: str, method: str, smoothed: bool) -> str:
    """Evaluation-run localisation metric: ``mass/<m>`` (smoothed) or ``mass_raw/<m>`` (not)."""
    return f"{metric}{'' if smoothed else '_raw'}/{method}"


def loc_agg_metric(metric: str, stat: str, method: str, smoothed: bool = True) -> str:
    """Aggregate-run localisation metric: ``mass_mean/<m>`` (smoothed) or ``mass_raw_mean/<m>``."""
    return f"{metric}{'' if smoothed else '_raw'}_{stat}/{method}"


def loc_baseline_metric(metric: str, baseline: str) -> str:
    """Evaluation-run metric of a localisation baseline: ``baseline_mass/uniform``."""
    return f"baseline_{metric}/{baseline}"


def loc_agg_baseline_metric(metric: str, stat: str, baseline: str) -> str:
    """Aggregate-run metric of a localisation baseline: ``baseline_mass_mean/uniform`` etc."""
    return f"baseline_{metric}_{stat}/{baseline}"


# Sanity checks (stage ``sanity``): per method, over the trained seeds, on the trained aggregate run
SANITY_STATS: tuple[str, ...] = ("mprt_spearman_final", "mprt_ssim_final", "random_logit_ssim")
SANITY_STAT_LABELS = {"mprt_spearman_final": "MPRT Spearman (full randomisation)",
                      "mprt_ssim_final": "MPRT SSIM (full randomisation)",
                      "random_logit_ssim": "random-logit SSIM"}
# A method passes the MPRT when its mean Spearman after full randomisation is at most this: an
# a-priori line (a rank correlation of 0.5 means the randomised model's map still orders the
# pixels much like the trained one's), stated in the report, never tuned on results.
MPRT_PASS_THRESHOLD = 0.5


def sanity_metric(stat: str, agg: str, method: str) -> str:
    """Aggregate-run sanity metric, ``agg`` in mean/std: ``mprt_spearman_final_mean/<m>``."""
    return f"{stat}_{agg}/{method}"


def pair_suffix(arch_a: str, arch_b: str, n_archs: int) -> str:
    """The study-run metric suffix of an architecture pair: none for two architectures."""
    return "" if n_archs <= 2 else f"/{arch_a}~{arch_b}"
