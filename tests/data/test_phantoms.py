"""Phantoms: deterministic bytes, real formats re-read by the importers, balanced labels, tight
boxes, a label caused only by what is inside its box, targets that are not the brightest
structure, and backgrounds that differ from image to image."""

from __future__ import annotations

import hashlib
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from xiqa.data import lvot, objectcxr, phantoms
from xiqa.data.images import read_image
from xiqa.data.phantoms import chest, chest_objects, fields
from xiqa.errors import XiqaError


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_objectcxr_phantoms_are_byte_for_byte_deterministic(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        phantoms.write_objectcxr(tmp_path / name, n_images=12, min_size=64, max_size=96, seed=seed)
    assert folder_hash(tmp_path / "a") == folder_hash(tmp_path / "b")
    assert folder_hash(tmp_path / "a") != folder_hash(tmp_path / "c")


def test_lvot_phantoms_are_byte_for_byte_deterministic(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        phantoms.write_lvot(tmp_path / name, n_patients=3, slices_per_patient=4, size=64, seed=seed)
    assert folder_hash(tmp_path / "a") == folder_hash(tmp_path / "b")
    assert folder_hash(tmp_path / "a") != folder_hash(tmp_path / "c")


def _written(tmp_path_factory, write, read, **kwargs) -> tuple[Path, object]:
    """Write phantoms with ``write(folder, **kwargs)`` and read them back with the import code."""
    folder = tmp_path_factory.mktemp(write.__name__)
    write(folder, seed=0, **kwargs)
    return folder, read(folder)


@pytest.fixture(scope="module")
def cxr(tmp_path_factory) -> tuple[Path, object]:
    return _written(tmp_path_factory, phantoms.write_objectcxr, objectcxr.read_dataset,
                    n_images=40, min_size=128, max_size=160)


@pytest.fixture(scope="module")
def heart(tmp_path_factory) -> tuple[Path, object]:
    return _written(tmp_path_factory, phantoms.write_lvot, lvot.read_dataset,
                    n_patients=6, slices_per_patient=6, size=96)


def _covered(shape: tuple[int, int], boxes) -> np.ndarray:
    covered = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        covered[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
    return covered


def test_objectcxr_phantoms_are_balanced_with_one_to_four_boxes_inside_the_image(cxr):
    _, df = cxr
    assert len(df) == 40 and df["label"].sum() == 20
    assert (df.loc[df["label"] == 0, "boxes"].map(len) == 0).all()
    positives = df[df["label"] == 1]
    assert positives["boxes"].map(len).between(1, 4).all()
    for boxes, w, h in zip(positives["boxes"], positives["width"], positives["height"]):
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1
    # rectangles (clips), ellipses (coins, buttons, electrodes) and polygons (wires, chains, pins)
    assert {a.split()[0] for a in positives["annotation"] for a in a.split(";")} == {"0", "1", "2"}


def test_objectcxr_boxes_are_the_tight_boxes_of_the_drawn_objects():
    """Each annotated box is exactly the box of the attenuation its object adds, and the objects
    add nothing outside their boxes."""
    for index in range(12):
        rng = fields.seeded_rng(0, fields.CHEST, index)
        height, width = (int(s) for s in rng.integers(96, 129, size=2))
        patient = chest.Patient(height, width, 128, rng)
        objects_rng = fields.seeded_rng(0, fields.OBJECTS, index)
        added, objects = chest_objects.foreign_objects(patient, objects_rng)
        boxes = objectcxr.parse_annotation(objectcxr.format_annotation(objects))
        assert 1 <= len(boxes) <= 4
        covered = _covered(added.shape, boxes)
        assert not (added[~covered] != 0).any()
        for x0, y0, x1, y1 in boxes:
            inside = np.zeros(added.shape, dtype=bool)
            inside[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
            assert lvot.mask_to_box((added != 0) & inside) == (x0, y0, x1, y1)


def test_objectcxr_positive_differs_from_its_negative_twin_only_inside_tight_boxes():
    touching = []
    for index in range(12):
        neg, ann0 = phantoms.objectcxr_image(index, 0, 0, 96, 128)
        pos, ann1 = phantoms.objectcxr_image(index, 1, 0, 96, 128)
        assert ann0 == "" and ann1
        boxes = objectcxr.parse_annotation(ann1)
        changed = pos != neg
        assert not (changed & ~_covered(pos.shape, boxes)).any()
        for x0, y0, x1, y1 in boxes:
            inside = np.zeros(pos.shape, dtype=bool)
            inside[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
            touching.append(lvot.mask_to_box(changed & inside) == (x0, y0, x1, y1))
    # a faint object's outermost partial-volume pixels may round to no visible change
    assert np.mean(touching) >= 0.75


def test_objectcxr_objects_are_often_not_the_brightest_structure(cxr):
    """In most positives something outside every box (bone, a marker, text, a collimator edge)
    is at least as bright as the brightest pixel inside the boxes."""
    folder, df = cxr
    outshone = []
    for row in df[df["label"] == 1].itertuples():
        img = read_image(folder / row.image_id)
        covered = _covered(img.shape, row.boxes)
        outshone.append(img[~covered].max() >= img[covered].max())
    assert np.mean(outshone) >= 0.5


def test_objectcxr_backgrounds_differ_between_patients(cxr):
    from PIL import Image

    folder, df = cxr
    small = [np.asarray(Image.fromarray(read_image(folder / i).astype(np.uint8)).resize(
        (64, 64), Image.BILINEAR), dtype=np.float64) for i in df.loc[df["label"] == 0, "image_id"]]
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in combinations(small, 2)]
    mad = [np.abs(a - b).mean() for a, b in combinations(small, 2)]
    # one radiograph underlies them all, but warps, crops, flips and windows make each its own
    assert np.median(corr) < 0.7 and min(mad) > 10


def test_objectcxr_phantoms_need_the_real_radiograph(monkeypatch):
    import pydicom.data

    monkeypatch.setattr(pydicom.data, "get_testdata_file", lambda *a, **k: None)
    chest._radiograph_pixels.cache_clear()
    chest._radiograph.cache_clear()
    try:
        with pytest.raises(XiqaError, match="pydicom-data"):
            phantoms.objectcxr_image(0, 0, 0, 64, 64)
    finally:
        chest._radiograph_pixels.cache_clear()
        chest._radiograph.cache_clear()


def test_lvot_phantoms_group_mixed_labels_by_patient_with_masks_for_positives(heart):
    folder, df = heart
    assert len(df) == 36 and df["label"].sum() == 18
    per_patient = df.groupby("patient_id")["label"].agg(["size", "sum"])
    assert (per_patient["size"] == 6).all() and per_patient["sum"].between(1, 5).all()
    assert lvot.problems(df) == []
    assert ((df["mask"] != "") == (df["label"] == 1)).all()
    for row in df[df["label"] == 1].itertuples():
        mask = read_image(folder / row.mask) > 0
        assert row.boxes == [lvot.mask_to_box(mask)]  # the importer's box is the mask's tight box


def test_lvot_positive_differs_from_its_negative_twin_only_on_the_mask():
    for patient, index in ((0, 0), (1, 3), (2, 5), (3, 1)):
        neg, none = phantoms.lvot_slice(patient, index, 0, 0, 96)
        pos, mask = phantoms.lvot_slice(patient, index, 1, 0, 96)
        assert none is None and mask.any()
        assert np.array_equal(pos[~mask], neg[~mask])
        assert (pos[mask] != neg[mask]).mean() > 0.5


def test_lvot_tract_is_blood_and_not_the_brightest_structure():
    outshone = []
    for patient in range(16):
        pos, mask = phantoms.lvot_slice(patient, 0, 1, 0, 96)
        outshone.append(pos[~mask].max() >= pos[mask].max())
    assert np.mean(outshone) >= 0.5


def test_lvot_backgrounds_differ_between_patients():
    slices = [phantoms.lvot_slice(p, 0, 0, 0, 64)[0].astype(np.float64) for p in range(8)]
    mad = [np.abs(a - b).mean() for a, b in combinations(slices, 2)]
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in combinations(slices, 2)]
    assert min(mad) > 5 and np.median(corr) < 0.8
