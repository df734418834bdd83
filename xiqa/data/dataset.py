"""A prepared split as tensors: what training, randomisation and evaluation feed the networks.

The `prepare` stage decodes every scan once (:func:`xiqa.data.images.read_scan`), resizes it to
the recipe's ``image_size`` and stores it as uint8 (:func:`xiqa.data.transforms.to_cached`) in a
memory-mappable cache, ``data/prepared/<dataset>/images_<S>px.{npy,json}``
(:func:`write_image_cache`). :func:`load_split` reads ``{splits,images}.csv`` and maps one
split's rows of that cache (cached per process): training, randomisation and evaluation never
decode a scan, and a split's pages are read from disk or the page cache only when used.
:meth:`Split.inputs` gives the normalised float32 network input; :func:`batches` iterates a
split in shuffled, seeded mini-batches. :func:`read_boxes` reads ``boxes.csv``, what the Pointing
Game scores against.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from xiqa.errors import XiqaError
from xiqa.paths import prepared_dir, raw_dir
from xiqa.schema import SPLITS

CACHE_FORMAT = 1  # bump when the layout of the image cache changes


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a prepared dataset, decoded and resized.

    - ``images``: uint8 ``[N, 1, S, S]`` (S = ``image_size``), grayscale through a fixed window
    - ``labels``: int64 ``[N]`` (1 = the quality problem is present)
    - ``ids``: the ``image_id`` of each row (path relative to ``data/raw/<dataset>/``)
    - ``sizes``: int64 ``[N, 2]``, the original ``(width, height)`` in pixels, to scale boxes
      by ``image_size / width`` and ``image_size / height``
    """

    dataset: str
    split: str
    image_size: int
    images: torch.Tensor
    labels: torch.Tensor
    ids: tuple[str, ...]
    sizes: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def inputs(self, index: slice | torch.Tensor | list[int] = slice(None)) -> torch.Tensor:
        """Normalised network inputs float32 ``[n, 3, S, S]`` of the rows at ``index``."""
        from xiqa.data.transforms import standardise

        return standardise(self.images[index])

    def head(self, n: int | None) -> Split:
        """The first ``n`` rows (all of them when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return Split(self.dataset, self.split, self.image_size, self.images[:n],
                     self.labels[:n], self.ids[:n], self.sizes[:n])


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise XiqaError(f"{path}: not found (run `dvc repro prepare` first)")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise XiqaError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def cache_files(prepared: Path, image_size: int) -> tuple[Path, Path]:
    """The image cache of a prepared folder at ``image_size``: the uint8 ``.npy`` array and its
    JSON index."""
    stem = f"images_{int(image_size)}px"
    return prepared / f"{stem}.npy", prepared / f"{stem}.json"


@dataclass(frozen=True)
class _Rows:
    """The rows of one split: image ids, labels, original sizes and raw file paths."""

    ids: tuple[str, ...]
    labels: list[int]
    sizes: list[tuple[int, int]]
    paths: list[Path]


def _split_rows(prepared: Path, raw: Path, split: str) -> _Rows:
    splits_csv, images_csv = prepared / "splits.csv", prepared / "images.csv"
    rows = [r for r in _read_csv(splits_csv, ("image_id", "split", "label")) if r["split"] == split]
    if not rows:
        raise XiqaError(f"{splits_csv}: no rows in split {split!r}")
    where = {r["image_id"]: r for r in _read_csv(images_csv, ("image_id", "path", "width", "height"))}
    labels, sizes, paths = [], [], []
    for row in rows:
        meta = where.get(row["image_id"])
        if meta is None:
            raise XiqaError(f"{images_csv}: no row for image_id {row['image_id']!r} of {splits_csv}")
        if row["label"] not in ("0", "1"):
            raise XiqaError(f"{splits_csv}: image_id {row['image_id']!r}: label must be 0 or 1, "
                            f"got {row['label']!r}")
        labels.append(int(row["label"]))
        sizes.append((int(meta["width"]), int(meta["height"])))
        paths.append(raw / meta["path"])
    return _Rows(tuple(r["image_id"] for r in rows), labels, sizes, paths)


def write_image_cache(root: Path, dataset: str, image_size: int) -> tuple[Path, Path]:
    """Decode every scan of prepared ``dataset`` once and store it resized: the `prepare` stage.

    Writes ``data/prepared/<dataset>/images_<S>px.npy``, uint8 ``[N, 1, S, S]`` with the rows of
    train, val and test one after the other (each in ``splits.csv`` order, so a split is one
    contiguous, memory-mappable slice), and ``images_<S>px.json``, the index: ``image_size``,
    ``shape`` and, per split, its first row and its ``ids``. Scans are decoded by up to 8 threads
    and written in row order straight into the file, so memory holds a few scans, not the
    dataset. Returns both paths.
    """
    import numpy as np

    from xiqa.data.images import read_scan
    from xiqa.data.transforms import to_cached
    from xiqa.io import atomic_path, reserve, write_json

    prepared = prepared_dir(Path(root), dataset).resolve()
    raw = raw_dir(Path(root), dataset).resolve()
    rows = {name: _split_rows(prepared, raw, name) for name in SPLITS}
    total = sum(len(r.ids) for r in rows.values())
    shape = (total, 1, int(image_size), int(image_size))
    npy, index = cache_files(prepared, image_size)
    splits: dict[str, dict] = {}
    start = 0
    for name in SPLITS:
        splits[name] = {"start": start, "ids": list(rows[name].ids)}
        start += len(rows[name].ids)
    paths = [p for name in SPLITS for p in rows[name].paths]

    def one(path: Path) -> np.ndarray:
        return to_cached(read_scan(path), image_size).numpy()

    # decoders (Pillow, pydicom) and resizing release the GIL: threads decode in parallel, and
    # map() hands the results back in row order
    with atomic_path(npy) as tmp, ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        reserve(tmp)  # a full disk: ENOSPC now, not SIGBUS from the writes into the map below
        for row, image in enumerate(pool.map(one, paths)):
            out[row] = image
        out.flush()
        del out
    write_json(index, {"format": CACHE_FORMAT, "image_size": int(image_size), "shape": list(shape),
                       "dtype": "uint8", "splits": splits})
    return npy, index


def _mapped_images(prepared: Path, split: str, image_size: int, ids: tuple[str, ...]) -> torch.Tensor:
    """The split's rows of the cache, memory-mapped (copy-on-write: nothing is read until used,
    and an in-place change stays in this process); a missing or stale cache is a XiqaError."""
    import json

    import numpy as np

    npy, index = cache_files(prepared, image_size)
    hint = "run `dvc repro prepare` (the cache is written at train.<dataset>.image_size)"
    if not index.is_file() or not npy.is_file():
        missing = index if not index.is_file() else npy
        raise XiqaError(f"{missing}: image cache not found; {hint}")
    try:
        meta = json.loads(index.read_text())
        entry = meta["splits"][split]
        start, cached_ids = int(entry["start"]), tuple(entry["ids"])
        shape = tuple(int(v) for v in meta["shape"])
        fmt, size = meta["format"], int(meta["image_size"])
    except (ValueError, KeyError, TypeError) as err:
        raise XiqaError(f"{index}: not a valid image cache index ({type(err).__name__}: {err}); "
                        f"{hint}") from None
    if fmt != CACHE_FORMAT or size != image_size:
        raise XiqaError(f"{index}: cache of {size} px (format {fmt}), expected {image_size} px "
                        f"(format {CACHE_FORMAT}); {hint}")
    if cached_ids != ids:
        raise XiqaError(f"{index}: the {split} ids differ from splits.csv (stale cache); {hint}")
    try:
        arr = np.load(npy, mmap_mode="c", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise XiqaError(f"{npy}: cannot read the image cache ({err}); {hint}") from None
    if arr.dtype != np.uint8 or arr.shape != shape or start + len(ids) > shape[0]:
        raise XiqaError(f"{npy}: array {arr.dtype} {tuple(arr.shape)} does not match its index "
                        f"{index.name} (uint8 {shape}); {hint}")
    return torch.from_numpy(arr[start:start + len(ids)])


def load_split(root: Path, dataset: str, split: str, image_size: int) -> Split:
    """Rows of ``split`` (train/val/test) of prepared ``dataset`` under project ``root``, in
    ``splits.csv`` order, as uint8 ``image_size`` squares memory-mapped from the `prepare` stage's
    image cache (:func:`write_image_cache`; nothing is decoded here). Cached per process."""
    if split not in SPLITS:
        raise XiqaError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    prepared = prepared_dir(Path(root), dataset).resolve()
    stamp = tuple(p.stat().st_mtime_ns if p.is_file() else 0
                  for p in (prepared / "splits.csv", prepared / "images.csv",
                            *cache_files(prepared, int(image_size))))
    return _load_split(prepared, raw_dir(Path(root), dataset).resolve(), dataset, split,
                       int(image_size), stamp)


def read_boxes(path: Path) -> dict[str, np.ndarray]:
    """``boxes.csv`` (``image_id, x0, y0, x1, y1``, original pixels, inclusive) as
    ``{image_id: float [B, 4]}``."""
    path = Path(path)
    if not path.is_file():
        raise XiqaError(f"{path}: not found (run `dvc repro prepare` first)")
    out: dict[str, list[list[float]]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("image_id", "x0", "y0", "x1", "y1") if c not in (reader.fieldnames or [])]
        if missing:
            raise XiqaError(f"{path}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                box = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
            except ValueError:
                raise XiqaError(f"{path}: row {line}: box coordinates must be numbers, got {row}") from None
            out.setdefault(row["image_id"], []).append(box)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


@lru_cache(maxsize=16)
def _load_split(prepared: Path, raw: Path, dataset: str, split: str, image_size: int,
                _stamp: tuple[int, ...]) -> Split:
    rows = _split_rows(prepared, raw, split)
    images = _mapped_images(prepared, split, image_size, rows.ids)
    return Split(dataset, split, image_size, images, torch.tensor(rows.labels, dtype=torch.int64),
                 rows.ids, torch.tensor(rows.sizes, dtype=torch.int64))


class _SplitRows(torch.utils.data.Dataset):
    """Rows of a split as ``(uint8 [1, S, S], int64)`` pairs."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.images[i], self.split.labels[i]


def _seed_worker(_worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy/random follow it.
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def batches(split: Split, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None, num_workers: int = 0,
            drop_singleton: bool = False, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader of mini-batches ``(uint8 [B, 1, S, S], int64 [B])`` of ``split``.

    ``shuffle`` draws the order from ``generator`` (seeded by the caller, which makes the order
    reproducible). ``drop_singleton`` drops a last batch of one sample, which BatchNorm cannot
    train on. Images stay uint8: augment (:func:`xiqa.data.transforms.augment`, a whole batch at
    once) and standardise them on the target device; ``pin_memory`` (for CUDA) makes that copy
    asynchronous.
    """
    return torch.utils.data.DataLoader(
        _SplitRows(split), batch_size=batch_size, shuffle=shuffle,
        generator=generator, num_workers=num_workers, worker_init_fn=_seed_worker,
        drop_last=drop_singleton and len(split) % batch_size == 1 and len(split) > 1,
        persistent_workers=False, pin_memory=pin_memory)
