"""The README's overlay: one test scan with its box, then a trained model's Grad-CAM and NormGrad maps."""

from __future__ import annotations

import numpy as np
from PIL import Image

from xiqa.evaluation.samples import SampleMaps
from xiqa.report import overlay

METHODS = ["input_x_gradient", "gradcam", "normgrad_conv3x3_single", "normgrad_conv3x3_multi"]


def _sample(methods: list[str] = METHODS, k: int = 2, size: int = 32) -> SampleMaps:
    rng = np.random.default_rng(0)
    maps = {s: rng.integers(0, 256, (k, len(methods), size, size), dtype=np.uint8) for s in (False, True)}
    peaks = {s: rng.integers(0, size, (k, len(methods), 2)).astype(float) for s in (False, True)}
    hits = {s: rng.integers(0, 2, (k, len(methods))).astype(float) for s in (False, True)}
    boxes = [np.array([[3.0, 4.0, 10.0, 12.0]]) for _ in range(k)]
    return SampleMaps([f"img{i}.png" for i in range(k)], methods,
                      rng.integers(0, 256, (k, size, size), dtype=np.uint8), boxes, maps, peaks, hits)


def test_overlay_shows_the_first_image_bare_then_gradcam_and_normgrad_with_their_smoothed_peaks() -> None:
    sample = _sample()
    fig = overlay.overlay_figure(sample)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["test scan, expert box", "Grad-CAM", "NormGrad conv3x3 (single)", "NormGrad conv3x3 (multi)"]
    assert fig.axes[0].get_ylabel() == "img0.png" and not fig.axes[0].lines  # the bare scan: no peak
    for ax, method in zip(fig.axes[1:], overlay.OVERLAY_METHODS, strict=True):
        m = METHODS.index(method)
        (cross,) = ax.lines
        assert (cross.get_xdata()[0], cross.get_ydata()[0]) == tuple(sample.peaks[True][0, m])
        assert cross.get_color() == ("white" if sample.hits[True][0, m] else "black")
        np.testing.assert_allclose(ax.images[1].get_array(), sample.maps[True][0, m] / 255.0, rtol=1e-6)


def test_overlay_is_written_for_the_trained_first_seed_and_skipped_without_a_sample(tmp_path) -> None:
    samples = {("objectcxr", "resnet34", "trained", 1): _sample(),
               ("objectcxr", "resnet34", "fr", 2): _sample()}
    (path,) = overlay.write_overlay("objectcxr", "resnet34", 1, samples, tmp_path)
    assert path == tmp_path / "overlay-objectcxr.png"
    with Image.open(path) as png:
        assert png.width > 2 * png.height > 300  # one row of four panels
    assert overlay.write_overlay("objectcxr", "resnet34", 2, samples, tmp_path / "none") == []
    assert overlay.write_overlay("lvot", "resnet34", 1, samples, tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


def test_a_grid_without_gradcam_or_normgrad_shows_its_first_three_methods() -> None:
    fig = overlay.overlay_figure(_sample(["input_x_gradient", "guided_backprop", "guided_gradcam", "x"]))
    assert [ax.get_title() for ax in fig.axes][1:] == ["Input × Gradient", "Guided Backprop", "Guided Grad-CAM"]
