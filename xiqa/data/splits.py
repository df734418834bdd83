"""Patient-wise, label-stratified, seeded splits and the prepared files of a dataset.

``data/prepared/<ds>/`` holds three plain CSVs (SPEC 2.4, docs/DESIGN.md):

- ``splits.csv``  ``image_id, patient_id, split, label`` (split in train/val/test)
- ``boxes.csv``   ``image_id, x0, y0, x1, y1``: inclusive, original pixels, one row per box
- ``images.csv``  ``image_id, path, width, height`` (``path`` relative to ``data/raw/<ds>/``)

:func:`load_prepared` reads them back with the boxes grouped per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from xiqa.errors import XiqaError
from xiqa.io import atomic_path
from xiqa.schema import SPLITS

FILES = ("splits.csv", "boxes.csv", "images.csv")


def assign_splits(table: pd.DataFrame, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  seed: int = 0) -> pd.Series:
    """The split (``train``/``val``/``test``) of every row of ``table`` (columns
    ``patient_id``, ``label``), indexed like ``table``.

    Whole patients are assigned, so no patient is in two splits. Stratified by label: each
    split has a target number of positive and of negative images (``fraction x total``);
    patients are taken largest first, in a seeded random order among equal sizes, and each goes
    to the split whose remaining deficit its images fill best (``n_pos x deficit_pos +
    n_neg x deficit_neg``; ties go to train, then val). With one image per patient (Object-CXR)
    this splits each label exactly in the given proportions, up to rounding. Every split with a
    positive fraction gets at least one patient when there are enough patients.
    """
    shares = np.asarray(fractions, dtype=float)
    if shares.shape != (3,) or (shares < 0).any() or abs(shares.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {shares}")
    labels = table["label"].astype(int)
    per_patient = pd.DataFrame({"pos": labels.groupby(table["patient_id"], sort=True).sum()})
    per_patient["neg"] = labels.groupby(table["patient_id"], sort=True).size() - per_patient["pos"]
    rng = np.random.default_rng(int(seed))
    per_patient = per_patient.iloc[rng.permutation(len(per_patient))]
    size = per_patient["pos"] + per_patient["neg"]
    per_patient = per_patient.iloc[np.argsort(-size.to_numpy(), kind="stable")]
    deficit_pos = shares * per_patient["pos"].sum()
    deficit_neg = shares * per_patient["neg"].sum()
    assigned: dict[object, int] = {}
    for pid, n_pos, n_neg in zip(per_patient.index, per_patient["pos"], per_patient["neg"], strict=True):
        score = np.round(n_pos * deficit_pos + n_neg * deficit_neg, 9)
        best = int(np.argmax(score))  # the first maximum: train, then val, then test
        deficit_pos[best] -= n_pos
        deficit_neg[best] -= n_neg
        assigned[pid] = best
    _fill_empty_splits(assigned, shares, per_patient.index.tolist())
    split_of = {pid: SPLITS[s] for pid, s in assigned.items()}
    return table["patient_id"].map(split_of).rename("split")


def _fill_empty_splits(assigned: dict, fractions: np.ndarray, order: list) -> None:
    """Move one patient (the last assigned of the largest split) into each empty split that
    should not be empty, when that leaves the donor split non-empty."""
    for s in range(3):
        members = [p for p in order if assigned[p] == s]
        if fractions[s] == 0 or members:
            continue
        sizes = [sum(1 for p in order if assigned[p] == d) for d in range(3)]
        donor = int(np.argmax(sizes))
        if sizes[donor] < 2:
            continue
        last = [p for p in order if assigned[p] == donor][-1]
        assigned[last] = s


def _clip_box(box: Sequence[float], width: int, height: int) -> tuple[float, ...]:
    x0, y0, x1, y1 = box
    return (max(0.0, x0), max(0.0, y0), min(float(width - 1), x1), min(float(height - 1), y1))


def _tidy_numbers(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Integers when every coordinate is integer-valued, so boxes read ``12`` not ``12.0``."""
    values = df[list(columns)].astype(float)
    whole = bool((values == values.round()).all().all())
    df[list(columns)] = values.round().astype("int64") if whole else values
    return df


def prepare(table: pd.DataFrame, out_dir: Path | str, fractions: Sequence[float] = (0.8, 0.1, 0.1),
            seed: int = 0) -> None:
    """Write ``splits.csv``, ``boxes.csv`` and ``images.csv`` for a dataset table (from
    ``objectcxr.read_dataset`` or ``lvot.read_dataset``: ``image_id, patient_id, label, boxes,
    width, height``) into ``out_dir``, atomically (all three or none). Boxes are clipped to
    their image."""
    table = table.sort_values("image_id", kind="stable").reset_index(drop=True)
    splits = pd.DataFrame({"image_id": table["image_id"], "patient_id": table["patient_id"],
                           "split": assign_splits(table, fractions, seed),
                           "label": table["label"].astype("int64")})
    boxes = pd.DataFrame(
        [(iid, *_clip_box(b, w, h)) for iid, bs, w, h in
         zip(table["image_id"], table["boxes"], table["width"], table["height"], strict=True) for b in bs],
        columns=["image_id", "x0", "y0", "x1", "y1"])
    boxes = _tidy_numbers(boxes, ["x0", "y0", "x1", "y1"])
    images = pd.DataFrame({"image_id": table["image_id"], "path": table["image_id"],
                           "width": table["width"].astype("int64"),
                           "height": table["height"].astype("int64")})
    with atomic_path(Path(out_dir)) as tmp:
        tmp.mkdir(parents=True)
        for name, frame in zip(FILES, (splits, boxes, images), strict=True):
            frame.to_csv(tmp / name, index=False, lineterminator="\n")


class Prepared(NamedTuple):
    """A prepared dataset; the three frames share one row per image, in the same order.

    - ``splits``: ``image_id, patient_id, split, label``
    - ``boxes``:  ``image_id, boxes`` with ``boxes`` a list of ``(x0, y0, x1, y1)`` float tuples
      (inclusive, original pixels; empty for an image without a box)
    - ``images``: ``image_id, path, width, height``
    """

    splits: pd.DataFrame
    boxes: pd.DataFrame
    images: pd.DataFrame


def _read(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise XiqaError(f"{path}: prepared file not found (run the `prepare` stage first)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise XiqaError(f"{path}: missing column(s) {', '.join(missing)}")
    return df[list(columns)]


def load_prepared(prepared_dir: Path | str) -> Prepared:
    """Read ``splits.csv``, ``boxes.csv`` and ``images.csv`` of ``prepared_dir`` (see
    :class:`Prepared`); a missing or inconsistent file raises :class:`XiqaError`."""
    prepared_dir = Path(prepared_dir)
    splits = _read(prepared_dir / "splits.csv", ["image_id", "patient_id", "split", "label"])
    splits = splits.astype({"label": "int64"})
    ids = splits["image_id"]
    images = _read(prepared_dir / "images.csv", ["image_id", "path", "width", "height"])
    images = images.astype({"width": "int64", "height": "int64"}).set_index("image_id")
    if set(images.index) != set(ids):
        raise XiqaError(f"{prepared_dir / 'images.csv'}: does not list the same images as splits.csv")
    images = images.loc[ids].reset_index()
    raw = _read(prepared_dir / "boxes.csv", ["image_id", "x0", "y0", "x1", "y1"])
    raw = raw.astype({c: "float64" for c in ("x0", "y0", "x1", "y1")})
    unknown = set(raw["image_id"]) - set(ids)
    if unknown:
        raise XiqaError(f"{prepared_dir / 'boxes.csv'}: image {sorted(unknown)[0]!r} is not in splits.csv")
    grouped: dict[str, list[tuple[float, float, float, float]]] = {i: [] for i in ids}
    for iid, x0, y0, x1, y1 in raw.itertuples(index=False):
        grouped[iid].append((x0, y0, x1, y1))
    boxes = pd.DataFrame({"image_id": ids, "boxes": [grouped[i] for i in ids]})
    return Prepared(splits, boxes, images)
