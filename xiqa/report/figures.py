"""Saliency overlays and the paper's figure layouts (Figures 2–6).

An overlay is the scan in grey, the saliency map on top (``jet`` colour map, transparency
``alpha``), the ground-truth boxes in red and the map's peak marked with a cross (white when the
Pointing Game counts a hit, black on a miss). The layouts put methods in columns and
variants in rows:

- :func:`smoothing_figure`     (Fig. 2) smoothing off / on, per sample image;
- :func:`randomisation_figure` (Figs. 3, 5) FR / SR / trained, per sample image;
- :func:`seeds_figure`         (Fig. 4) trained seeds side by side;
- :func:`architectures_figure` (Fig. 6) trained architectures side by side;
- :func:`sanity_figure` the MPRT curves in Adebayo et al.'s layout (similarity to the trained
  maps against randomised depth, one line per method; Spearman and SSIM panels, one row per
  architecture).

For the ``report`` stage, :func:`write_layouts`, :func:`write_sanity_figure` and
:func:`write_training_figure` save one dataset's figures as ``<layout>-<ds>.png``.

The maps come from :class:`SampleMaps`, saved by the evaluate stage for a fixed, seeded sample
of test images (the maps are stored as uint8 for display only; the peaks drawn are the ones the
Pointing Game used, stored in full precision).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.evaluation.samples import SampleMaps, to_uint8  # noqa: F401  (re-exported)
from xiqa.io import atomic_path

if TYPE_CHECKING:
    from xiqa.report.gather import StudyInputs

CMAP = "jet"
ALPHA = 0.45
PANEL_INCHES = 1.3


@dataclass
class Panel:
    """One overlay: scan ``[H, W]`` in [0, 1] or uint8, map ``[H, W]`` in [0, 1] or uint8,
    boxes ``[B, 4]`` (x0, y0, x1, y1 inclusive, the image's pixels), peak ``(x, y)`` or None."""

    image: np.ndarray
    saliency: np.ndarray | None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    peak: tuple[float, float] | None = None
    hit: bool | None = None


def draw_overlay(ax, panel: Panel, alpha: float = ALPHA) -> None:
    """Draw one overlay on a matplotlib axis (no ticks)."""
    img = np.asarray(panel.image, dtype=np.float32)
    if img.max() > 1.0:
        img = img / 255.0
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if panel.saliency is not None:
        sal = np.asarray(panel.saliency, dtype=np.float32)
        if sal.max() > 1.0:
            sal = sal / 255.0
        ax.imshow(sal, cmap=CMAP, vmin=0, vmax=1, alpha=alpha, interpolation="bilinear")
    for x0, y0, x1, y1 in np.asarray(panel.boxes, dtype=float).reshape(-1, 4):
        # inclusive pixel ranges: the box covers pixel centres x0..x1, i.e. edges x0-0.5..x1+0.5
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                               edgecolor="red", linewidth=1.0))
    if panel.peak is not None:
        colour = "white" if panel.hit or panel.hit is None else "black"
        ax.plot([panel.peak[0]], [panel.peak[1]], marker="x", markersize=7, markeredgewidth=2,
                color=colour)
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def overlay_grid(rows: Sequence[tuple[str, Sequence[Panel]]], columns: Sequence[str], title: str = ""):
    """A figure with one row per ``(label, panels)`` and one column per ``columns`` label."""
    if not rows or not columns:
        raise XiqaError(f"figure {title!r}: nothing to draw")
    n_rows, n_cols = len(rows), len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(PANEL_INCHES * n_cols + 0.8, PANEL_INCHES * n_rows + 0.6),
                             squeeze=False)
    for r, (label, panels) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            if c < len(panels) and panels[c] is not None:
                draw_overlay(ax, panels[c])
            else:
                ax.axis("off")
            if r == 0:
                ax.set_title(columns[c], fontsize=6)
        axes[r][0].set_ylabel(label, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Save a figure as PNG atomically and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- layouts
def _columns(methods: Sequence[str]) -> list[str]:
    return ["scan"] + [S.method_label(m) for m in methods]


def sample_panel(maps: SampleMaps, k: int, method: str, smoothed: bool = True) -> Panel:
    """Image ``k`` of a figure sample with ``method``'s map, its peak and its hit."""
    m = maps.methods.index(method)
    hit = maps.hits[smoothed][k, m]
    return Panel(maps.images[k], maps.maps[smoothed][k, m], maps.boxes[k],
                 tuple(maps.peaks[smoothed][k, m]), None if np.isnan(hit) else bool(hit))


def _row(maps: SampleMaps, k: int, methods: Sequence[str], smoothed: bool) -> list[Panel]:
    scan = Panel(maps.images[k], None, maps.boxes[k])
    return [scan] + [sample_panel(maps, k, m, smoothed) for m in methods]


def _common_methods(models: Sequence[SampleMaps]) -> list[str]:
    first = models[0].methods
    return [m for m in first if all(m in x.methods for x in models)]


def smoothing_figure(maps: SampleMaps, title: str = ""):
    """Fig. 2: each sample image with smoothing off, then on; methods in columns."""
    rows = []
    for k, image_id in enumerate(maps.image_ids):
        rows.append((f"{image_id}\nno smoothing", _row(maps, k, maps.methods, False)))
        rows.append((f"{image_id}\nsmoothed", _row(maps, k, maps.methods, True)))
    return overlay_grid(rows, _columns(maps.methods), title)


def variants_figure(variants: Sequence[tuple[str, SampleMaps]], title: str = "", smoothed: bool = True):
    """Rows = each sample image × each labelled model (conditions, seeds or architectures).

    All variants must share the sample (same dataset, same seeded sample): the evaluate stage
    draws it from the dataset's test split only, so they do.
    """
    if not variants:
        raise XiqaError(f"figure {title!r}: no model to show")
    models = [m for _, m in variants]
    ids = models[0].image_ids
    for label, m in variants:
        if m.image_ids != ids:
            raise XiqaError(f"figure {title!r}: model {label} was scored on a different figure sample")
    methods = _common_methods(models)
    rows = []
    for k, image_id in enumerate(ids):
        for label, m in variants:
            rows.append((f"{image_id}\n{label}", _row(m, k, methods, smoothed)))
    return overlay_grid(rows, _columns(methods), title)


randomisation_figure = variants_figure  # Figs. 3 and 5: [("FR", ...), ("SR", ...), ("trained", ...)]
seeds_figure = variants_figure  # Fig. 4: [("seed 1", ...), ("seed 2", ...), ...]
architectures_figure = variants_figure  # Fig. 6: [("ResNet-34", ...), ("EfficientNet-B0", ...)]


def sanity_figure(rows: Sequence[tuple[str, Sequence[str], dict[str, dict[str, list[float]]]]], title: str = "",
                  threshold: float | None = None):
    """MPRT curves: one row per ``(label, blocks, curves)`` (an architecture; ``blocks`` the step
    labels, 0 = ``original``; ``curves`` ``{method: {"spearman": [per step], "ssim": [...]}}``),
    columns Spearman (|maps|) and SSIM; x = cumulative randomisation from the logits down.
    ``threshold``: a dashed line at the MPRT pass threshold on the Spearman panels."""
    if not rows:
        raise XiqaError(f"figure {title!r}: no MPRT result to draw")
    fig, axes = plt.subplots(len(rows), 2, figsize=(9.5, 2.9 * len(rows) + 0.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for r, (label, blocks, curves) in enumerate(rows):
        for c, (sim, name) in enumerate((("spearman", "Spearman rank correlation"), ("ssim", "SSIM"))):
            ax = axes[r][c]
            for i, (method, curve) in enumerate(curves.items()):
                ax.plot(range(len(curve[sim])), curve[sim], marker="o", markersize=3, linewidth=1.2,
                        color=cmap(i % 10), label=S.method_label(method))
            if threshold is not None and sim == "spearman":
                ax.axhline(threshold, color="grey", linestyle="--", linewidth=0.8)
            ax.set_xticks(range(len(blocks)))
            ax.set_xticklabels(blocks, rotation=60, ha="right", fontsize=6)
            lows = [v for curve in curves.values() for v in curve[sim] if np.isfinite(v)]
            ax.set_ylim(min([-0.25, *lows]) - 0.05, 1.05)  # never clip a curve below the usual range
            if r == len(rows) - 1:
                ax.set_xlabel("randomised down to (cumulative, from the logits)", fontsize=7)
            ax.set_ylabel(f"{label}\n{name}", fontsize=7)
            ax.tick_params(axis="y", labelsize=6)
            ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=5, loc="upper right", ncol=1)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.4)
    return fig


def training_figure(models: Sequence[tuple[str, dict[str, list[tuple[int, float]]]]],
                    pretext: Sequence[tuple[str, dict[str, list[tuple[int, float]]]]], title: str = ""):
    """Learning curves: one line per trained model (``(label, {"train_loss": [(epoch, v)],
    "val_auc": [...]})``) in a training-loss and a validation-AUC panel, with ln 2 (the loss of
    always answering 0.5) and AUC 0.5 (chance) dashed; a third panel, when ``pretext`` is given,
    the pretext loss and accuracy per epoch of each stand-in start (``pretext_loss``,
    ``pretext_accuracy``)."""
    if not models:
        raise XiqaError(f"figure {title!r}: no training history to draw")
    panels = 3 if pretext else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for c, (key, name, chance) in enumerate((("train_loss", "training loss (cross-entropy)", float(np.log(2))),
                                             ("val_auc", "validation ROC AUC", 0.5))):
        ax = axes[0][c]
        for i, (label, curves) in enumerate(models):
            points = curves.get(key, [])
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, linewidth=1.1,
                        color=cmap(i % 10), label=label)
        ax.axhline(chance, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=5, loc="upper right")
    if pretext:
        ax = axes[0][2]
        for i, (label, curves) in enumerate(pretext):
            for key, style in (("pretext_loss", "-"), ("pretext_accuracy", ":")):
                points = curves.get(key, [])
                if points:
                    ax.plot(*zip(*points, strict=True), style, marker="o", markersize=3, linewidth=1.1,
                            color=cmap(i % 10), label=f"{label} {key.split('_')[1]}")
        ax.set_xlabel("pretext epoch", fontsize=7)
        ax.set_title("stand-in pretext: loss (solid), accuracy (dotted)", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.4)
    return fig


# ---------------------------------------------------------------------- the report stage's figure files
def write_layouts(ds: str, archs: list[str], seeds: list[int], samples: dict, out: Path) -> list[Path]:
    """The four layouts for one dataset, from the figure-sample maps of its models."""
    out.mkdir(parents=True, exist_ok=True)
    first, s1 = archs[0], seeds[0]
    label = f"{S.DATASET_LABELS.get(ds, ds)} {S.ARCH_LABELS.get(first, first)}"
    made = []

    def save(fig: Any, name: str) -> None:
        made.append(save_figure(fig, out / f"{name}-{ds}.png"))

    trained = samples.get((ds, first, "trained", s1))
    if trained is None:
        return made
    save(smoothing_figure(trained, f"{label}, trained seed {s1}: smoothing off / on"), "smoothing")
    variants = [(S.CONDITION_LABELS[c], samples[(ds, first, c, s1)]) for c in ("fr", "sr", "trained")
                if (ds, first, c, s1) in samples]
    save(randomisation_figure(variants, f"{label}: FR / SR / trained (seed {s1}), smoothed"), "randomisation")
    by_seed = [(f"seed {s}", samples[(ds, first, "trained", s)]) for s in seeds if (ds, first, "trained", s) in samples]
    if len(by_seed) > 1:
        save(seeds_figure(by_seed, f"{label}: trained seeds side by side, smoothed"), "seeds")
    by_arch = [(S.ARCH_LABELS.get(a, a), samples[(ds, a, "trained", s1)]) for a in archs
               if (ds, a, "trained", s1) in samples]
    if len(by_arch) > 1:
        save(architectures_figure(by_arch, f"{S.DATASET_LABELS.get(ds, ds)}: architectures side by side "
                                           f"(trained seed {s1}), smoothed"), "architectures")
    return made


def write_training_figure(ds: str, archs: Sequence[str], seeds: Sequence[int], grid: StudyInputs,
                          out: Path) -> list[Path]:
    """``training-<ds>.png``: training loss and validation AUC per epoch of every trained model
    of ``ds``, and the pretext curves of the stand-in starts they began from."""
    models = [(f"{S.ARCH_LABELS.get(a, a)} s{s}", grid.curves[(ds, a, s)]) for a in archs for s in seeds
              if grid.curves.get((ds, a, s))]
    if not models:
        return []
    starts = dict.fromkeys(st for a in archs for st in grid.starts.get((ds, a, "trained"), []))
    pretext = [(f"{st.split(':', 1)[0]} {run_arch}", grid.pretext[st]) for st in starts if st in grid.pretext
               for run_arch in [_start_arch(st, archs, grid, ds)]]
    out.mkdir(parents=True, exist_ok=True)
    fig = training_figure(models, pretext, f"{S.DATASET_LABELS.get(ds, ds)}: learning curves of the trained "
                                           "models (dashed: ln 2 and AUC 0.5, a model that learned nothing)")
    return [save_figure(fig, out / f"training-{ds}.png")]


def _start_arch(start: str, archs: Sequence[str], grid: StudyInputs, ds: str) -> str:
    return next((S.ARCH_LABELS.get(a, a) for a in archs if start in grid.starts.get((ds, a, "trained"), [])), "")


def write_sanity_figure(ds: str, archs: Sequence[str], sanity: dict, methods: list[str], out: Path) -> list[Path]:
    """``sanity-<ds>.png``: the MPRT curves of each arch (mean over its trained seeds)."""
    from xiqa.evaluation.aggregate import sanity_curves

    rows = [(S.ARCH_LABELS.get(a, a), sanity[(ds, a)][0]["blocks"], sanity_curves(sanity[(ds, a)], methods))
            for a in archs if sanity.get((ds, a))]
    if not rows:
        return []
    out.mkdir(parents=True, exist_ok=True)
    fig = sanity_figure(rows, f"{S.DATASET_LABELS.get(ds, ds)}: model-parameter randomisation test, "
                              "trained models (mean over seeds)", threshold=S.MPRT_PASS_THRESHOLD)
    return [save_figure(fig, out / f"sanity-{ds}.png")]

