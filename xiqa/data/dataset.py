"""A prepared split as tensors: what training, randomisation and evaluation feed the networks.

:func:`load_split` reads ``data/prepared/<dataset>/{splits,images}.csv``, decodes every image of
one split once (:func:`xiqa.data.images.read_scan`), resizes it to ``image_size`` and keeps it
as uint8 (:func:`xiqa.data.transforms.to_cached`). The result is cached per process, so several
models evaluated in one process decode each scan once. :meth:`Split.inputs` gives the
normalised float32 network input; :func:`batches` iterates a split in (optionally augmented,
shuffled, seeded) mini-batches.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch

from xiqa.errors import XiqaError
from xiqa.paths import prepared_dir, raw_dir

SPLITS = ("train", "val", "test")


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
        from xiqa.data.transforms import normalise

        return normalise(self.images[index])

    def head(self, n: int | None) -> "Split":
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


def load_split(root: Path, dataset: str, split: str, image_size: int) -> Split:
    """Rows of ``split`` (train/val/test) of prepared ``dataset`` under project ``root``, in
    ``splits.csv`` order, decoded to uint8 ``image_size`` squares. Cached per process."""
    if split not in SPLITS:
        raise XiqaError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    prepared = prepared_dir(Path(root), dataset).resolve()
    splits_csv = prepared / "splits.csv"
    stamp = (splits_csv.stat().st_mtime_ns if splits_csv.is_file() else 0,
             (prepared / "images.csv").stat().st_mtime_ns if (prepared / "images.csv").is_file() else 0)
    return _load_split(prepared, raw_dir(Path(root), dataset).resolve(), dataset, split,
                       int(image_size), stamp)


@lru_cache(maxsize=16)
def _load_split(prepared: Path, raw: Path, dataset: str, split: str, image_size: int,
                stamp: tuple[int, int]) -> Split:
    from xiqa.data.images import read_scan
    from xiqa.data.transforms import to_cached

    splits_csv, images_csv = prepared / "splits.csv", prepared / "images.csv"
    rows = [r for r in _read_csv(splits_csv, ("image_id", "split", "label")) if r["split"] == split]
    if not rows:
        raise XiqaError(f"{splits_csv}: no rows in split {split!r}")
    where = {r["image_id"]: r for r in _read_csv(images_csv, ("image_id", "path", "width", "height"))}
    images, labels, sizes = [], [], []
    for line, row in enumerate(rows, start=2):
        meta = where.get(row["image_id"])
        if meta is None:
            raise XiqaError(f"{images_csv}: no row for image_id {row['image_id']!r} of {splits_csv}")
        if row["label"] not in ("0", "1"):
            raise XiqaError(f"{splits_csv}: image_id {row['image_id']!r}: label must be 0 or 1, "
                            f"got {row['label']!r}")
        images.append(to_cached(read_scan(raw / meta["path"]), image_size))
        labels.append(int(row["label"]))
        sizes.append((int(meta["width"]), int(meta["height"])))
    split_ = Split(dataset, split, image_size, torch.stack(images),
                   torch.tensor(labels, dtype=torch.int64), tuple(r["image_id"] for r in rows),
                   torch.tensor(sizes, dtype=torch.int64))
    split_.images.requires_grad_(False)
    return split_


class _Augmented(torch.utils.data.Dataset):
    """Rows of a split, each augmented on access (in the worker that loads it)."""

    def __init__(self, split: Split, augment: bool) -> None:
        from xiqa.data.transforms import augmentation

        self.split = split
        self.transform = augmentation() if augment else None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.split.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.split.labels[i]


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy/random follow it.
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def batches(split: Split, batch_size: int, *, shuffle: bool = False, augment: bool = False,
            generator: torch.Generator | None = None, num_workers: int = 0,
            drop_singleton: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader of mini-batches ``(uint8 [B, 1, S, S], int64 [B])`` of ``split``.

    ``shuffle`` draws the order from ``generator`` (seeded by the caller, which makes the order
    and, with workers, their augmentation seeds reproducible); ``augment`` applies
    :func:`xiqa.data.transforms.augmentation` per sample (in the main process its draws come
    from torch's global generator). ``drop_singleton`` drops a last batch of one sample, which
    BatchNorm cannot train on. Images stay uint8: normalise them on the target device.
    """
    return torch.utils.data.DataLoader(
        _Augmented(split, augment), batch_size=batch_size, shuffle=shuffle,
        generator=generator, num_workers=num_workers, worker_init_fn=_seed_worker,
        drop_last=drop_singleton and len(split) % batch_size == 1 and len(split) > 1,
        persistent_workers=False)
