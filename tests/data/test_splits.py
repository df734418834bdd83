"""Splits: patient-wise, seeded, stratified; the prepared files and their reader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xiqa.data import splits
from xiqa.errors import XiqaError


def slices_table(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    """Patients with 1-8 slices each and a patient-specific share of positives."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        share = rng.uniform(0.1, 0.9)
        for s in range(int(rng.integers(1, 9))):
            rows.append({"image_id": f"p{p}/s{s}.png", "patient_id": f"p{p}",
                         "label": int(rng.random() < share)})
    return pd.DataFrame(rows)


def test_splits_never_share_a_patient():
    table = slices_table()
    table["split"] = splits.assign_splits(table, seed=1)
    assert set(table["split"]) == {"train", "val", "test"}
    assert table.groupby("patient_id")["split"].nunique().max() == 1


def test_splits_are_reproducible_for_a_seed_and_change_with_it():
    table = slices_table()
    a = splits.assign_splits(table, seed=7)
    assert a.equals(splits.assign_splits(table, seed=7))
    assert a.equals(splits.assign_splits(table.sample(frac=1, random_state=3), seed=7).loc[table.index])
    assert not a.equals(splits.assign_splits(table, seed=8))


def test_splits_keep_proportions_and_label_balance():
    table = slices_table(n_patients=120)
    table["split"] = splits.assign_splits(table, seed=0)
    share = table["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.8, abs=0.03)
    assert share["val"] == pytest.approx(0.1, abs=0.03) and share["test"] == pytest.approx(0.1, abs=0.03)
    positive = table.groupby("split")["label"].mean()
    assert (positive - table["label"].mean()).abs().max() < 0.06


def test_one_image_per_patient_splits_each_label_exactly_80_10_10():
    table = pd.DataFrame({"image_id": [f"i{k}" for k in range(240)],
                          "patient_id": [f"i{k}" for k in range(240)],
                          "label": [k % 2 for k in range(240)]})
    table["split"] = splits.assign_splits(table, seed=5)
    counts = table.groupby(["split", "label"]).size()
    assert counts.to_dict() == {("test", 0): 12, ("test", 1): 12, ("train", 0): 96,
                                ("train", 1): 96, ("val", 0): 12, ("val", 1): 12}


def test_three_patients_still_fill_every_split():
    table = pd.DataFrame({"image_id": list("abcdef"), "patient_id": list("xxyyzz"),
                          "label": [0, 1, 0, 1, 1, 0]})
    assert sorted(splits.assign_splits(table, seed=0).unique()) == ["test", "train", "val"]


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": ["b.png", "a.png", "c.png", "d.png"], "patient_id": ["P1", "P1", "P2", "P3"],
        "label": [1, 0, 1, 0], "width": [20, 20, 30, 30], "height": [10, 10, 12, 12],
        "boxes": [[(1.0, 2.0, 5.0, 6.0), (-3.0, 4.0, 25.0, 9.0)], [], [(2.5, 3.0, 4.0, 5.0)], []],
    })


def test_prepare_writes_the_three_files_and_load_prepared_groups_boxes(tmp_path):
    out = tmp_path / "prepared"
    splits.prepare(_table(), out, seed=0)
    assert (out / "boxes.csv").read_text().splitlines() == [
        "image_id,x0,y0,x1,y1", "b.png,1.0,2.0,5.0,6.0", "b.png,0.0,4.0,19.0,9.0",  # clipped
        "c.png,2.5,3.0,4.0,5.0"]
    assert (out / "images.csv").read_text().splitlines()[1] == "a.png,a.png,20,10"
    prepared = splits.load_prepared(out)
    assert prepared.splits.columns.tolist() == ["image_id", "patient_id", "split", "label"]
    assert prepared.splits["image_id"].tolist() == ["a.png", "b.png", "c.png", "d.png"]
    assert prepared.images["image_id"].tolist() == prepared.splits["image_id"].tolist()
    assert prepared.boxes["boxes"].tolist() == [
        [], [(1.0, 2.0, 5.0, 6.0), (0.0, 4.0, 19.0, 9.0)], [(2.5, 3.0, 4.0, 5.0)], []]
    by_patient = prepared.splits.groupby("patient_id")["split"].nunique()
    assert by_patient.max() == 1
    splits_, boxes, images = prepared  # unpacks as a plain tuple too
    assert images["width"].dtype == "int64" and splits_["label"].dtype == "int64"


def test_integer_boxes_are_written_without_decimals(tmp_path):
    table = _table()
    table["boxes"] = [[(1, 2, 5, 6)], [], [(2, 3, 4, 5)], []]
    splits.prepare(table, tmp_path / "p")
    assert (tmp_path / "p" / "boxes.csv").read_text().splitlines()[1] == "b.png,1,2,5,6"


def test_a_failed_prepare_leaves_no_output(tmp_path):
    table = _table().drop(columns=["width"])
    with pytest.raises(KeyError):
        splits.prepare(table, tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_load_prepared_names_a_missing_file(tmp_path):
    splits.prepare(_table(), tmp_path / "p")
    (tmp_path / "p" / "images.csv").unlink()
    with pytest.raises(XiqaError, match="images.csv: prepared file not found"):
        splits.load_prepared(tmp_path / "p")
