"""Decoding scans and their fixed intensity window (never per-image min-max)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xiqa.data.images import read_image, read_scan, write_dicom, write_png
from xiqa.errors import XiqaError

EPS32 = float(np.finfo(np.float32).eps)  # read_scan returns float32 in [0, 1]


def test_an_8bit_png_maps_by_255_so_a_bright_object_leaves_the_background_unchanged(tmp_path: Path) -> None:
    chest = np.full((20, 30), 150, dtype=np.uint8)
    with_object = chest.copy()
    with_object[5:8, 5:8] = 250
    write_png(tmp_path / "a.png", chest)
    write_png(tmp_path / "b.png", with_object)
    a, b = read_scan(tmp_path / "a.png"), read_scan(tmp_path / "b.png")
    assert a.dtype == np.float32 and a[0, 0] == pytest.approx(150 / 255)
    assert b[0, 0] == a[0, 0] and b[6, 6] == pytest.approx(250 / 255)


def test_a_16bit_png_keeps_every_bit_and_uses_the_percentile_window(tmp_path: Path) -> None:
    arr = np.tile(np.arange(1000, 1000 + 200 * 10, 10, dtype=np.uint16), (10, 1))  # 10 x 200
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png").max() == 2990.0  # not clipped to 255
    lo, hi = np.percentile(arr.astype(np.float32), [0.5, 99.5])
    expected = np.clip((arr - lo) / (hi - lo), 0, 1)
    # float32 window: (value - lo) / (hi - lo) with values ~1.5 × the range, a few roundings
    np.testing.assert_allclose(read_scan(tmp_path / "deep.png"), expected, atol=8 * EPS32, rtol=0)


def test_a_dicom_window_is_applied_as_a_viewer_shows_it_and_monochrome1_is_inverted(tmp_path: Path) -> None:
    arr = np.array([[0, 1000, 1500], [2000, 3000, 4000]], dtype=np.uint16)
    write_dicom(tmp_path / "w.dcm", arr, window=(2000, 2000))  # window 1000..3000
    np.testing.assert_allclose(read_scan(tmp_path / "w.dcm"), [[0, 0, 0.25], [0.5, 1, 1]], atol=4 * EPS32, rtol=0)
    write_dicom(tmp_path / "inv.dcm", arr, window=(2000, 2000), photometric="MONOCHROME1")
    np.testing.assert_allclose(read_scan(tmp_path / "inv.dcm"), [[1, 1, 0.75], [0.5, 0, 0]], atol=4 * EPS32, rtol=0)


def test_npy_without_a_window_uses_percentiles_that_a_tiny_object_barely_moves(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    body = rng.normal(100, 10, (100, 100)).astype(np.float32)
    np.save(tmp_path / "plain.npy", body)
    spiked = body.copy()
    spiked[:4, :4] = 10_000  # 0.16 % of the pixels
    np.save(tmp_path / "spiked.npy", spiked)
    plain, with_spike = read_scan(tmp_path / "plain.npy"), read_scan(tmp_path / "spiked.npy")
    shift = np.abs(plain[50:, 50:] - with_spike[50:, 50:]).max()
    minmax_shift = np.abs((body - body.min()) / np.ptp(body) - (spiked - spiked.min()) / np.ptp(spiked))[50:, 50:].max()
    assert shift < 0.03 and minmax_shift > 0.5  # per-image min-max would crush the background
    assert with_spike[:4, :4].min() == 1.0


def test_constant_and_non_finite_images(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.full((5, 5), 7.0))
    assert not read_scan(tmp_path / "flat.npy").any()
    bad = np.ones((5, 5))
    bad[2, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(XiqaError, match=r"nan\.npy: the image holds non-finite values"):
        read_scan(tmp_path / "nan.npy")
