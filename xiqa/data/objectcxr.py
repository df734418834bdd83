"""Object-CXR: parse its annotations, validate a folder as distributed, import it.

Layout (SPEC 2.1): ``train/`` and ``dev/`` JPEG folders and ``train.csv`` / ``dev.csv`` with
columns ``image_name`` (relative to the part's folder) and ``annotation``. An annotation is
empty for an image without objects, else objects separated by ``;``, each ``T x1 y1 x2 y2 ...``
in original pixels: ``T=0`` rectangle (two corners), ``T=1`` ellipse (its bounding-box
corners), ``T=2`` polygon (any number of points). Every object becomes its axis-aligned box.

The real ``train/`` and ``dev/`` parts are pooled: ``image_id`` is ``<part>/<image_name>``
(e.g. ``train/00012.jpg``), and the `prepare` stage re-splits the pool 80/10/10 with its own
seeded, stratified split (Object-CXR has no patient ids, so ``patient_id`` = ``image_id``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd

from xiqa.data import track
from xiqa.data.images import IMAGE_SUFFIXES, image_shape, member_path, read_image
from xiqa.errors import XiqaError
from xiqa.io import atomic_path

Box = tuple[float, float, float, float]
PARTS = ("train", "dev")
COLUMNS = ("image_name", "annotation")
SHAPES = {0: "rectangle", 1: "ellipse", 2: "polygon"}


def parse_annotation(text: str | float | None, where: str = "annotation") -> list[Box]:
    """Boxes ``(x0, y0, x1, y1)`` (``x0 <= x1``, ``y0 <= y1``, original pixels) of one
    ``annotation`` cell, one per object, in the cell's order.

    Empty, blank, ``None`` or NaN means no object. Extra spaces and a trailing ``;`` are fine.
    A malformed object raises :class:`XiqaError` naming ``where`` (the file and row) and the
    object's text.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    boxes: list[Box] = []
    for chunk in str(text).split(";"):
        chunk = chunk.strip()
        if not chunk:
            continue
        boxes.append(_parse_object(chunk, where))
    return boxes


def _parse_object(chunk: str, where: str) -> Box:
    def bad(why: str) -> XiqaError:
        return XiqaError(f"{where}: malformed object {chunk!r} ({why})")

    fields = chunk.split()
    try:
        kind = int(fields[0])
    except ValueError:
        raise bad("the shape type must be 0, 1 or 2") from None
    if kind not in SHAPES:
        raise bad("the shape type must be 0 (rectangle), 1 (ellipse) or 2 (polygon)")
    try:
        coords = [float(v) for v in fields[1:]]
    except ValueError:
        raise bad("coordinates must be numbers") from None
    if not all(math.isfinite(v) for v in coords):
        raise bad("coordinates must be finite")
    if len(coords) % 2:
        raise bad("an odd number of coordinates")
    n_points = len(coords) // 2
    if kind in (0, 1) and n_points != 2:
        raise bad(f"a {SHAPES[kind]} needs exactly two corner points, got {n_points}")
    if kind == 2 and n_points < 2:
        raise bad(f"a polygon needs at least two points, got {n_points}")
    xs, ys = coords[0::2], coords[1::2]
    return (min(xs), min(ys), max(xs), max(ys))


def format_annotation(objects: list[tuple[int, list[float]]]) -> str:
    """The ``annotation`` cell for ``[(type, [x1, y1, x2, y2, ...]), ...]`` (integers written
    without a decimal point); the inverse of :func:`parse_annotation` up to the box reduction."""
    def num(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else repr(float(v))

    return ";".join(" ".join([str(int(kind)), *map(num, coords)]) for kind, coords in objects)


def read_dataset(root: Path | str, decode: bool = True, progress: bool = False) -> pd.DataFrame:
    """Validate an Object-CXR folder and describe it, one row per image.

    Columns: ``image_id`` (``<part>/<image_name>``), ``patient_id`` (= ``image_id``), ``part``
    (``train``/``dev``), ``label`` (1 iff at least one object), ``boxes`` (list of
    ``(x0, y0, x1, y1)`` floats, original pixels), ``width``, ``height``, ``annotation`` (the
    stripped CSV cell).

    Checks, each failing with a :class:`XiqaError` naming the file and row: both CSVs and
    folders exist with the right columns; names stay inside their folder (no ``..``); no name
    repeats; every row has its image and every image in the folders has a row; every image
    decodes (``decode=True``; else only its header is read); annotations parse; every box
    overlaps its image.
    """
    root = Path(root)
    if not root.is_dir():
        raise XiqaError(f"{root}: not an Object-CXR folder (expected train/, dev/, train.csv, dev.csv)")
    rows: list[dict] = []
    for part in PARTS:
        rows.extend(_read_part(root, part))
    for row in track(rows, f"checking {len(rows)} Object-CXR images", enabled=progress):
        path = root / row["image_id"]
        if decode:
            arr = read_image(path)
            row["width"], row["height"] = int(arr.shape[1]), int(arr.shape[0])
        else:
            row["width"], row["height"] = image_shape(path)
        for box in row["boxes"]:
            if box[2] < 0 or box[3] < 0 or box[0] > row["width"] - 1 or box[1] > row["height"] - 1:
                raise XiqaError(f"{row.pop('where')}: object box {box} lies outside the "
                                f"{row['width']}x{row['height']} image")
        row.pop("where")
    df = pd.DataFrame(rows, columns=["image_id", "patient_id", "part", "label", "boxes",
                                     "width", "height", "annotation"])
    if df.empty:
        raise XiqaError(f"{root}: train.csv and dev.csv list no images")
    return df.astype({"label": "int64", "width": "int64", "height": "int64"})


def _read_part(root: Path, part: str) -> list[dict]:
    csv, folder = root / f"{part}.csv", root / part
    if not csv.is_file():
        raise XiqaError(f"{csv}: missing (an Object-CXR folder holds train/, dev/, train.csv, dev.csv)")
    if not folder.is_dir():
        raise XiqaError(f"{folder}: missing image folder for {csv.name}")
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except Exception as err:
        raise XiqaError(f"{csv}: cannot read CSV ({type(err).__name__}: {err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise XiqaError(f"{csv}: missing column(s) {', '.join(missing)} (expected image_name, annotation)")
    rows: list[dict] = []
    seen: dict[str, int] = {}
    for i, (name, annotation) in enumerate(zip(table["image_name"], table["annotation"], strict=True), start=1):
        where = f"{csv} row {i} ({name.strip()!r})"
        path = member_path(folder, name, where)
        rel = path.relative_to(folder).as_posix()
        if rel in seen:
            raise XiqaError(f"{where}: image {rel!r} already listed in row {seen[rel]}")
        seen[rel] = i
        if not path.is_file():
            raise XiqaError(f"{where}: image file {part}/{rel} not found")
        boxes = parse_annotation(annotation, where)
        image_id = f"{part}/{rel}"
        rows.append({"image_id": image_id, "patient_id": image_id, "part": part,
                     "label": int(bool(boxes)), "boxes": boxes, "annotation": annotation.strip(),
                     "where": where})
    for path in sorted(folder.rglob("*")):
        if (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
                and not any(p.startswith(".") for p in path.relative_to(folder).parts)
                and path.relative_to(folder).as_posix() not in seen):
            raise XiqaError(f"{path}: image has no row in {csv}")
    return rows


def import_dataset(source: Path | str, target: Path | str, progress: bool = False) -> pd.DataFrame:
    """Validate the Object-CXR folder ``source`` (see :func:`read_dataset`) and copy it to
    ``target`` in the same layout, atomically: on any error ``target`` is left untouched.
    Only the two CSVs and the images they list are copied. Returns the validated table."""
    source, target = Path(source), Path(target)
    df = read_dataset(source, decode=True, progress=progress)
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        for part in PARTS:
            shutil.copyfile(source / f"{part}.csv", tmp / f"{part}.csv")
        for image_id in track(df["image_id"], f"copying {len(df)} images", enabled=progress):
            dst = tmp / image_id
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / image_id, dst)
    return df
