"""LVOT: mask_to_box and the manifest import (PNG/NPY/DICOM slices, PNG masks, real files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xiqa.data import lvot
from xiqa.data.images import write_dicom, write_png
from xiqa.errors import XiqaError


# --------------------------------------------------------------------------- mask_to_box
def test_mask_to_box_of_a_single_pixel_uses_x_column_y_row():
    mask = np.zeros((4, 7), dtype=bool)
    mask[1, 6] = True
    assert lvot.mask_to_box(mask) == (6, 1, 6, 1)


def test_mask_to_box_is_inclusive_and_tight():
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[2:5, 3:9] = 255
    mask[7, 4] = 1
    assert lvot.mask_to_box(mask) == (3, 2, 8, 7)


def test_mask_to_box_touching_every_border():
    mask = np.zeros((5, 6), dtype=bool)
    mask[0, 0] = mask[4, 5] = True
    assert lvot.mask_to_box(mask) == (0, 0, 5, 4)
    assert lvot.mask_to_box(np.ones((5, 6))) == (0, 0, 5, 4)


def test_mask_to_box_of_an_empty_mask_is_none():
    assert lvot.mask_to_box(np.zeros((5, 6), dtype=bool)) is None


def test_mask_to_box_refuses_a_3d_array():
    with pytest.raises(ValueError, match="2-D"):
        lvot.mask_to_box(np.ones((2, 3, 4)))


# --------------------------------------------------------------------------- import
@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Two patients, four slices in PNG, NPY and DICOM; two positives with masks."""
    folder = tmp_path / "source"
    (folder / "img").mkdir(parents=True)
    (folder / "msk").mkdir()
    rng = np.random.default_rng(0)
    write_png(folder / "img" / "a0.png", rng.integers(0, 200, (20, 24)))
    np.save(folder / "img" / "a1.npy", rng.normal(size=(20, 24)).astype(np.float32))
    write_dicom(folder / "img" / "b0.dcm", rng.integers(0, 4000, (20, 24)))
    write_png(folder / "img" / "b1.png", rng.integers(0, 200, (20, 24)))
    mask = np.zeros((20, 24), dtype=np.uint8)
    mask[5:9, 10:16] = 255
    write_png(folder / "msk" / "a1.png", mask)
    write_png(folder / "msk" / "b0.png", mask // 255)  # 0/1 masks are binary too
    (folder / "lvot.csv").write_text(
        "patient_id,image,mask,label\n"
        "A,img/a0.png,,0\n"
        "A,img/a1.npy,msk/a1.png,1\n"
        "B,img/b0.dcm,msk/b0.png,1\n"
        "B,img/b1.png,,0\n")
    return folder


def test_import_copies_manifest_images_and_masks(source, tmp_path):
    target = tmp_path / "raw" / "lvot"
    df = lvot.import_dataset(source / "lvot.csv", target)
    assert df["image_id"].tolist() == ["img/a0.png", "img/a1.npy", "img/b0.dcm", "img/b1.png"]
    assert df["boxes"].tolist() == [[], [(10, 5, 15, 8)], [(10, 5, 15, 8)], []]
    assert (df["width"] == 24).all() and (df["height"] == 20).all()
    assert lvot.problems(df) == []
    assert (target / "manifest.csv").read_text().splitlines()[2] == "A,img/a1.npy,msk/a1.png,1"
    for rel in ("img/a0.png", "img/a1.npy", "img/b0.dcm", "msk/b0.png"):
        assert (target / rel).read_bytes() == (source / rel).read_bytes()
    again = lvot.read_dataset(target, decode=False)  # a folder holding manifest.csv
    assert again["boxes"].tolist() == df["boxes"].tolist()


def test_a_label_1_slice_without_a_mask_is_reported_not_refused(source, tmp_path):
    csv = source / "lvot.csv"
    csv.write_text(csv.read_text().replace("B,img/b0.dcm,msk/b0.png,1", "B,img/b0.dcm,,1"))
    df = lvot.import_dataset(csv, tmp_path / "raw" / "lvot")
    assert df["missing_mask"].tolist() == [False, False, True, False]
    [line] = lvot.problems(df)
    assert line.startswith("1 label-1 slice(s) have no mask") and "img/b0.dcm" in line


def _refused(source: Path, tmp_path: Path, *fragments: str) -> None:
    target = tmp_path / "raw" / "lvot"
    with pytest.raises(XiqaError) as err:
        lvot.import_dataset(source / "lvot.csv", target)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert not target.exists() and not (target.parent.exists() and any(target.parent.iterdir()))


def test_import_refuses_a_mask_whose_size_differs_from_its_image(source, tmp_path):
    write_png(source / "msk" / "b0.png", np.zeros((20, 23), dtype=np.uint8))
    _refused(source, tmp_path, "lvot.csv row 3", "msk/b0.png", "is 23x20", "img/b0.dcm", "is 24x20")


def test_import_refuses_a_mask_that_is_not_binary(source, tmp_path):
    write_png(source / "msk" / "a1.png", np.arange(480).reshape(20, 24) % 3)
    _refused(source, tmp_path, "row 2", "not binary")


def test_import_refuses_a_missing_image(source, tmp_path):
    (source / "img" / "b1.png").unlink()
    _refused(source, tmp_path, "img/b1.png", "not found")


def test_import_refuses_an_undecodable_image(source, tmp_path):
    (source / "img" / "a1.npy").write_bytes(b"garbage")
    _refused(source, tmp_path, "a1.npy", "cannot decode")


def test_import_refuses_an_image_outside_the_manifest_folder(source, tmp_path):
    csv = source / "lvot.csv"
    csv.write_text(csv.read_text().replace("img/b1.png", "../b1.png"))
    _refused(source, tmp_path, "row 4", "escapes the folder")


@pytest.mark.parametrize("label", ["2", "yes", ""])
def test_import_refuses_a_label_other_than_0_or_1(source, tmp_path, label):
    csv = source / "lvot.csv"
    csv.write_text(csv.read_text().replace("B,img/b1.png,,0", f"B,img/b1.png,,{label}"))
    _refused(source, tmp_path, "row 4", "label must be 0 or 1")


def test_import_refuses_a_manifest_without_a_label_column(source, tmp_path):
    csv = source / "lvot.csv"
    csv.write_text(csv.read_text().replace("patient_id,image,mask,label", "patient_id,image,mask,y"))
    _refused(source, tmp_path, "missing column(s) label")
