"""LVOT: the import format xiqa defines for the private 4-chamber cardiac MR data (SPEC 2.2).

A manifest CSV with columns ``patient_id, image, mask, label``: ``image`` is a PNG/JPEG/NPY/
DICOM slice and ``mask`` an optional binary PNG segmentation of the LVOT, both relative to the
manifest's folder; ``label`` 1 means the LVOT is present. The box of a slice is the tightest
axis-aligned box around its mask (:func:`mask_to_box`). In the project the import lives in
``data/raw/lvot/`` as ``manifest.csv`` plus the files it names, at the same relative paths, so
``image_id`` (the image's path relative to that folder) is stable.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from xiqa.data import track
from xiqa.data.images import image_shape, member_path, read_image
from xiqa.errors import XiqaError
from xiqa.io import atomic_path

MANIFEST = "manifest.csv"
COLUMNS = ("patient_id", "image", "mask", "label")


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tightest inclusive box ``(x0, y0, x1, y1)`` around the non-zero pixels of a 2-D mask,
    with x the column and y the row; ``None`` for an empty mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def manifest_path(source: Path | str) -> Path:
    """The manifest CSV of ``source``: the file itself, or ``manifest.csv`` inside a folder."""
    source = Path(source)
    path = source / MANIFEST if source.is_dir() else source
    if not path.is_file():
        raise XiqaError(f"{path}: LVOT manifest not found (a CSV with patient_id, image, mask, label)")
    return path


def read_manifest(source: Path | str) -> pd.DataFrame:
    """The manifest as strings (``patient_id, image, mask, label``; ``mask`` "" when absent),
    checking columns, labels and patient ids; errors name the CSV row."""
    path = manifest_path(source)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        raise XiqaError(f"{path}: cannot read CSV ({type(err).__name__}: {err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if "mask" not in table.columns:  # masks are optional, so is their column
        table["mask"] = ""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise XiqaError(f"{path}: missing column(s) {', '.join(missing)} "
                        "(expected patient_id, image, mask, label)")
    table = table[list(COLUMNS)].apply(lambda col: col.str.strip())
    if table.empty:
        raise XiqaError(f"{path}: the manifest lists no slices")
    for i, row in enumerate(table.itertuples(index=False), start=1):
        if not row.patient_id:
            raise XiqaError(f"{path} row {i}: empty patient_id")
        if row.label not in ("0", "1"):
            raise XiqaError(f"{path} row {i}: label must be 0 or 1, got {row.label!r}")
    return table.reset_index(drop=True)


def read_dataset(source: Path | str, decode: bool = True, progress: bool = False) -> pd.DataFrame:
    """Validate an LVOT manifest and the files it names; one row per slice.

    Columns: ``image_id`` (the image path relative to the manifest's folder), ``patient_id``,
    ``label``, ``mask`` (relative path or ""), ``boxes`` (list with the mask's box, or empty),
    ``width``, ``height``, and two report flags: ``missing_mask`` (label 1 but no or an empty
    mask: the slice counts for accuracy, not for the Pointing Game) and ``mask_on_negative``
    (label 0 with a non-empty mask, whose box is then dropped).

    Errors (:class:`XiqaError`, naming the row): names leaving the folder, repeated images,
    missing or undecodable files, masks that are not binary PNGs or whose size differs from the
    image's. ``decode=False`` reads image headers only and skips masks' pixel checks except for
    the box (for an import already validated).
    """
    path = manifest_path(source)
    folder = path.parent
    table = read_manifest(path)
    seen: dict[str, int] = {}
    rows = []
    for i, row in enumerate(track(list(table.itertuples(index=False)),
                                  f"checking {len(table)} LVOT slices", enabled=progress), start=1):
        where = f"{path} row {i} ({row.image!r})"
        image = member_path(folder, row.image, where)
        image_id = image.relative_to(folder).as_posix()
        if image_id in seen:
            raise XiqaError(f"{where}: image {image_id!r} already listed in row {seen[image_id]}")
        seen[image_id] = i
        if decode:
            arr = read_image(image)
            width, height = int(arr.shape[1]), int(arr.shape[0])
        else:
            width, height = image_shape(image)
        label = int(row.label)
        box = None
        mask_id = ""
        if row.mask:
            mask_path = member_path(folder, row.mask, where)
            mask_id = mask_path.relative_to(folder).as_posix()
            if mask_path.suffix.lower() != ".png":
                raise XiqaError(f"{where}: mask {mask_id!r} must be a binary PNG")
            mask = read_image(mask_path)
            if mask.shape != (height, width):
                raise XiqaError(f"{where}: mask {mask_id!r} is {mask.shape[1]}x{mask.shape[0]} "
                                f"but image {image_id!r} is {width}x{height}")
            values = np.unique(mask)
            if values.size > 2 or (values.size == 2 and values[0] != 0):
                raise XiqaError(f"{where}: mask {mask_id!r} is not binary "
                                f"({values.size} distinct values)")
            box = mask_to_box(mask > 0)
        rows.append({
            "image_id": image_id, "patient_id": row.patient_id, "label": label, "mask": mask_id,
            "boxes": [box] if box is not None and label == 1 else [],
            "width": width, "height": height,
            "missing_mask": label == 1 and box is None,
            "mask_on_negative": label == 0 and box is not None,
        })
    return pd.DataFrame(rows)


def problems(df: pd.DataFrame) -> list[str]:
    """One sentence per kind of reported (non-fatal) problem in a :func:`read_dataset` table."""
    out = []
    for flag, what in (("missing_mask", "label-1 slice(s) have no mask or an empty mask, so no "
                                        "box (they count for accuracy, not for the Pointing Game)"),
                       ("mask_on_negative", "label-0 slice(s) have a non-empty mask, whose box "
                                            "is ignored")):
        ids = df.loc[df[flag], "image_id"].tolist()
        if ids:
            shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
            out.append(f"{len(ids)} {what}: {shown}")
    return out


def import_dataset(source: Path | str, target: Path | str, progress: bool = False) -> pd.DataFrame:
    """Validate the manifest ``source`` (a CSV, or a folder holding ``manifest.csv``) and copy
    it to ``target`` as ``manifest.csv`` plus the images and masks at their relative paths,
    atomically: on any error ``target`` is left untouched. Returns the validated table (see
    :func:`problems` for what to report)."""
    path = manifest_path(source)
    folder, target = path.parent, Path(target)
    df = read_dataset(path, decode=True, progress=progress)
    manifest = df[["patient_id", "image_id", "mask", "label"]].rename(columns={"image_id": "image"})
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        files = [*df["image_id"], *[m for m in df["mask"] if m]]
        for rel in track(files, f"copying {len(files)} files", enabled=progress):
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / rel, dst)
        manifest.to_csv(tmp / MANIFEST, index=False, lineterminator="\n")
    return df
