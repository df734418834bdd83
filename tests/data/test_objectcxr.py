"""Object-CXR: annotation parsing and the import's refusals (real files in tmp)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from xiqa.data import objectcxr, phantoms
from xiqa.errors import XiqaError


# --------------------------------------------------------------------------- parse_annotation
@pytest.mark.parametrize("text, boxes", [
    ("0 10 20 30 40", [(10, 20, 30, 40)]),
    ("0 30 40 10 20", [(10, 20, 30, 40)]),                        # corners in any order
    ("1 5 6 7 8", [(5, 6, 7, 8)]),                                # ellipse by its bounding box
    ("2 5 5 9 1 7 8 3 4", [(3, 1, 9, 8)]),                        # polygon of four points
    ("2 0 0 100 0 100 50 40 80 0 60 12 33", [(0, 0, 100, 80)]),   # six points
    ("0 1.5 2.5 3.5 4.5", [(1.5, 2.5, 3.5, 4.5)]),
    ("  0  1 2   3 4 ;  2 5 5 9 1 7 8 ;", [(1, 2, 3, 4), (5, 1, 9, 8)]),  # spaces, trailing ;
    ("0 1 2 3 4;1 10 11 12 13;2 20 21 22 23 24 25", [(1, 2, 3, 4), (10, 11, 12, 13), (20, 21, 24, 25)]),
    ("", []), ("   ", []), (";", []), (None, []), (math.nan, []),
])
def test_parse_annotation_gives_bounding_boxes(text, boxes):
    assert objectcxr.parse_annotation(text) == boxes


@pytest.mark.parametrize("text, why", [
    ("3 1 2 3 4", "shape type"),
    ("x 1 2 3 4", "shape type"),
    ("0 1 2 3", "odd number"),
    ("0 1 2 3 4 5 6", "exactly two corner points"),
    ("1 1 2", "exactly two corner points"),
    ("2 1 2", "at least two points"),
    ("0 a 2 3 4", "numbers"),
    ("1 1 2 inf 4", "finite"),
])
def test_parse_annotation_names_row_and_text_of_a_malformed_object(text, why):
    with pytest.raises(XiqaError) as err:
        objectcxr.parse_annotation(f"0 1 1 2 2;{text}", where="train.csv row 7")
    message = str(err.value)
    assert "train.csv row 7" in message and repr(text) in message and why in message


def test_format_annotation_round_trips_through_the_parser():
    text = objectcxr.format_annotation([(0, [1, 2, 3, 4]), (2, [5, 5, 9, 1, 7.5, 8])])
    assert text == "0 1 2 3 4;2 5 5 9 1 7.5 8"
    assert objectcxr.parse_annotation(text) == [(1, 2, 3, 4), (5, 1, 9, 8)]


# --------------------------------------------------------------------------- import
@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small Object-CXR folder in the distributed layout (20 phantoms: 18 train, 2 dev)."""
    folder = tmp_path / "source"
    phantoms.write_objectcxr(folder, n_images=20, min_size=48, max_size=64, seed=3)
    return folder


def _append_row(csv: Path, row: str) -> None:
    csv.write_text(csv.read_text() + row + "\n")


def test_import_copies_the_folder_and_describes_every_image(source: Path, tmp_path: Path):
    target = tmp_path / "raw" / "objectcxr"
    df = objectcxr.import_dataset(source, target)
    assert len(df) == 20 and df["label"].sum() == 10
    assert set(df["part"]) == {"train", "dev"} and (df["patient_id"] == df["image_id"]).all()
    assert df["image_id"].iloc[0] == "train/00000.jpg"
    for name in ("train.csv", "dev.csv", *df["image_id"]):
        assert (target / name).read_bytes() == (source / name).read_bytes()
    assert ((df["label"] == 1) == (df["boxes"].map(len) > 0)).all()
    assert ((df["width"] >= 48) & (df["width"] <= 64)).all()


def _refused(source: Path, tmp_path: Path, *fragments: str) -> None:
    """The import fails with a message holding ``fragments`` and leaves the target as it was."""
    target = tmp_path / "raw" / "objectcxr"
    target.mkdir(parents=True)
    (target / "previous.txt").write_text("kept")
    with pytest.raises(XiqaError) as err:
        objectcxr.import_dataset(source, target)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert sorted(p.name for p in target.iterdir()) == ["previous.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["objectcxr"]  # no temp left


def test_import_refuses_a_csv_row_without_its_image(source, tmp_path):
    (source / "train" / "00004.jpg").unlink()
    _refused(source, tmp_path, "train.csv row 5", "train/00004.jpg not found")


def test_import_refuses_an_image_without_a_csv_row(source, tmp_path):
    shutil.copy(source / "train" / "00000.jpg", source / "train" / "stray.jpg")
    _refused(source, tmp_path, "stray.jpg", "has no row in", "train.csv")


def test_import_refuses_an_undecodable_image(source, tmp_path):
    (source / "dev" / "00009.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    _refused(source, tmp_path, "dev/00009.jpg", "cannot decode")


@pytest.mark.parametrize("name", ["../secret.jpg", "/etc/passwd", "sub/../../x.jpg"])
def test_import_refuses_names_that_escape_the_folder(source, tmp_path, name):
    shutil.copy(source / "train" / "00000.jpg", source / "secret.jpg")
    _append_row(source / "train.csv", f"{name},")
    _refused(source, tmp_path, "train.csv row 19", "escapes the folder")


def test_import_refuses_a_malformed_annotation_naming_file_row_and_text(source, tmp_path):
    text = (source / "dev.csv").read_text().splitlines()
    text[1] = text[1].split(",")[0] + ",0 1 2 3"
    (source / "dev.csv").write_text("\n".join(text) + "\n")
    _refused(source, tmp_path, "dev.csv row 1", "'0 1 2 3'")


def test_import_refuses_a_box_outside_its_image(source, tmp_path):
    _append_row(source / "train.csv", "extra.jpg,0 500 500 600 600")
    shutil.copy(source / "train" / "00000.jpg", source / "train" / "extra.jpg")
    _refused(source, tmp_path, "train.csv row 19", "outside")


def test_import_refuses_a_folder_without_dev_csv(source, tmp_path):
    (source / "dev.csv").unlink()
    _refused(source, tmp_path, "dev.csv", "missing")


def test_import_refuses_a_repeated_image_name(source, tmp_path):
    _append_row(source / "train.csv", "00001.jpg,")
    _refused(source, tmp_path, "train.csv row 19", "already listed in row 2")
