"""The README's picture: one test scan, its expert box, and a trained model's saliency maps.

:func:`overlay_figure` draws the first image of a trained model's figure sample (the seeded
sample of test images with boxes that the evaluate stage saves, :class:`SampleMaps`) once bare
with its expert box, then under Grad-CAM and single- and multi-layer NormGrad (conv3x3), the
smoothed maps the study scores, each with the peak the Pointing Game used. The report stage
writes it as ``figures/overlay-<ds>.png`` (the study run's artifact, hence
``reports/figures/``); ``scripts/readme_results.py`` copies the demo's into ``docs/overlay.png``.
The image is not chosen by its score: it is the sample's first, whatever the model does on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from xiqa import schema as S
from xiqa.evaluation.samples import SampleMaps

__all__ = ["OVERLAY_METHODS", "overlay_figure", "write_overlay"]

# Grad-CAM against NormGrad on one layer and on all layers: the paper's comparison in one row
OVERLAY_METHODS: tuple[str, ...] = ("gradcam", "normgrad_conv3x3_single", "normgrad_conv3x3_multi")
DPI = 160
TITLE_INCHES = 0.35


def _methods(sample: SampleMaps) -> list[str]:
    """:data:`OVERLAY_METHODS` that the sample holds; else its first three (a grid that left them out)."""
    chosen = [m for m in OVERLAY_METHODS if m in sample.methods]
    return chosen or list(sample.methods[:3])


def overlay_figure(sample: SampleMaps, title: str = ""):
    """One row: image 0 of ``sample`` with its boxes, then its smoothed maps of :func:`_methods`
    (red: the expert's boxes; cross: the map's peak, white on a hit, black on a miss)."""
    from xiqa.report import figures as F

    methods = _methods(sample)
    panels = [F.Panel(sample.images[0], None, sample.boxes[0])]
    panels += [F.sample_panel(sample, 0, m, smoothed=True) for m in methods]
    fig = F.overlay_grid([(sample.image_ids[0], panels)], ["test scan, expert box"]
                         + [S.method_label(m) for m in methods])
    if title:  # a two-line title above one row of panels: a taller figure, the panels as they were
        width, height = fig.get_size_inches()
        fig.set_size_inches(width, height + TITLE_INCHES)
        fig.suptitle(title, fontsize=8)
        fig.tight_layout(pad=0.3, rect=(0, 0, 1, height / (height + TITLE_INCHES)))
    return fig


def write_overlay(ds: str, arch: str, seed: int, samples: Mapping[tuple[str, str, str, int], SampleMaps],
                  out: Path) -> list[Path]:
    """``out/overlay-<ds>.png`` from the figure sample of ``arch``'s trained model of ``seed``;
    ``[]`` when that model saved no sample (``evaluate.figure_samples: 0``)."""
    from xiqa.report import figures as F

    sample = samples.get((ds, arch, "trained", seed))
    if sample is None or not sample.image_ids:
        return []
    title = (f"{S.DATASET_LABELS.get(ds, ds)}, {S.ARCH_LABELS.get(arch, arch)} trained (seed {seed}), smoothed maps\n"
             "red: expert box; cross: the map's peak (white hit, black miss)")
    out.mkdir(parents=True, exist_ok=True)
    return [F.save_figure(overlay_figure(sample, title), out / f"overlay-{ds}.png", dpi=DPI)]

