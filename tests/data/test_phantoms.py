"""Phantoms: deterministic bytes, real formats, and a label caused only by a small boxed object."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from xiqa.data import lvot, objectcxr, phantoms
from xiqa.data.images import read_image


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


def test_objectcxr_phantoms_are_balanced_and_positives_have_boxes_inside_the_image(cxr):
    _, df = cxr
    assert len(df) == 40 and df["label"].sum() == 20
    assert (df.loc[df["label"] == 0, "boxes"].map(len) == 0).all()
    positives = df[df["label"] == 1]
    assert positives["boxes"].map(len).between(1, 3).all()
    for boxes, w, h in zip(positives["boxes"], positives["width"], positives["height"]):
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1
            side = max(x1 - x0 + 1, y1 - y0 + 1) / min(w, h)
            assert 0.03 <= side <= 0.11  # small: 5-10 % of the shorter side, up to rounding
    assert {a.split()[0] for a in positives["annotation"] for a in a.split(";")} == {"0", "1", "2"}


def test_objectcxr_phantom_boxes_cover_the_bright_metal(cxr):
    folder, df = cxr
    inside, outside_bright, lung = [], 0, []
    for row in df.itertuples():
        img = read_image(folder / row.image_id)
        covered = np.zeros(img.shape, dtype=bool)
        for x0, y0, x1, y1 in row.boxes:
            covered[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
            inside.append(img[covered].mean())
        outside_bright += int(((img > 225) & ~covered).sum())
        h, w = img.shape
        lung.append(np.median(img[h // 3: h // 2, w // 5: w // 3]))  # left lung field
    assert outside_bright == 0  # nothing metal-bright outside the boxes, in any image
    assert np.mean(inside) > 190 and np.median(lung) < 90


def test_objectcxr_positive_differs_from_its_negative_twin_only_inside_the_boxes():
    for index in range(6):
        neg, ann0 = phantoms.objectcxr_image(index, 0, 0, 96, 128)
        pos, ann1 = phantoms.objectcxr_image(index, 1, 0, 96, 128)
        assert ann0 == "" and ann1
        covered = np.zeros(pos.shape, dtype=bool)
        for x0, y0, x1, y1 in objectcxr.parse_annotation(ann1):
            covered[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
        assert np.array_equal(pos[~covered], neg[~covered])
        assert (pos[covered] >= phantoms.METAL_MIN).mean() > 0.4


def test_lvot_phantoms_group_mixed_labels_by_patient_with_masks_for_positives(heart):
    folder, df = heart
    assert len(df) == 36 and df["label"].sum() == 18
    per_patient = df.groupby("patient_id")["label"].agg(["size", "sum"])
    assert (per_patient["size"] == 6).all() and per_patient["sum"].between(1, 5).all()
    assert lvot.problems(df) == []
    assert ((df["mask"] != "") == (df["label"] == 1)).all()
    centres = []
    for boxes in df.loc[df["label"] == 1, "boxes"]:
        [(x0, y0, x1, y1)] = boxes
        assert 0 <= x0 <= x1 <= 95 and 0 <= y0 <= y1 <= 95
        assert 0.06 <= max(x1 - x0 + 1, y1 - y0 + 1) / 96 <= 0.17
        centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
    # the tract wanders around the centre rather than sitting on one spot
    assert np.std(centres, axis=0).min() > 0.05 * 96


def test_lvot_tract_lies_away_from_the_image_centre():
    """A saliency peak fixed at the image centre (the receptive-field bias of an untrained
    network) misses most tracts at the phantoms' 128 px and tau = 15."""
    from scipy.spatial.distance import cdist

    far = []
    for patient in range(30):
        _, mask = phantoms.lvot_slice(patient, 0, 1, 0, 128)
        ys, xs = np.nonzero(mask)
        far.append(cdist([(63.5, 63.5)], np.c_[xs, ys]).min() >= 15)
    assert np.mean(far) >= 0.6


def test_lvot_positive_differs_from_its_negative_twin_only_on_the_mask():
    for patient, index in ((0, 0), (1, 3), (2, 5)):
        neg, none = phantoms.lvot_slice(patient, index, 0, 0, 96)
        pos, mask = phantoms.lvot_slice(patient, index, 1, 0, 96)
        assert none is None and mask.any()
        assert np.array_equal(pos[~mask], neg[~mask])
        assert pos[mask].min() >= round(phantoms.LVOT_MIN * 255) > neg.max()
        assert neg.max() >= 0.68 * 255  # the fat rim: bright, in every slice
