"""A tiny prepared dataset on disk (the layout of docs/DESIGN.md), independent of the phantoms:
a dark noisy background; label 1 = a bright square somewhere."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from xiqa.data.dataset import write_image_cache


def write_tiny_dataset(root: Path, dataset: str = "objectcxr", n: int = 16, seed: int = 0,
                       splits: tuple[int, int, int] = (8, 4, 4),
                       cache_sizes: tuple[int, ...] = (32, 40)) -> Path:
    """``n`` PNG images of varying size under ``root/data/raw/<dataset>/img/``, the three CSVs
    under ``root/data/prepared/<dataset>/`` and the image cache at each of ``cache_sizes`` (what
    the `prepare` stage writes); returns ``root``."""
    rng = np.random.default_rng(seed)
    raw = root / "data" / "raw" / dataset
    prepared = root / "data" / "prepared" / dataset
    (raw / "img").mkdir(parents=True, exist_ok=True)
    prepared.mkdir(parents=True, exist_ok=True)
    names = ["train"] * splits[0] + ["val"] * splits[1] + ["test"] * splits[2]
    assert len(names) == n
    split_rows, image_rows, box_rows = [], [], []
    for i in range(n):
        h, w = int(rng.integers(40, 56)), int(rng.integers(40, 56))
        img = rng.normal(60, 15, (h, w)).clip(0, 255)
        label = i % 2
        if label:
            y, x = int(rng.integers(4, h - 16)), int(rng.integers(4, w - 16))
            img[y:y + 12, x:x + 12] = 230
            box_rows.append((f"img/{i:03d}.png", x, y, x + 11, y + 11))
        image_id = f"img/{i:03d}.png"
        Image.fromarray(img.astype(np.uint8)).save(raw / image_id)
        split_rows.append((image_id, image_id, names[i], label))
        image_rows.append((image_id, image_id, w, h))
    for name, header, rows in (("splits.csv", ("image_id", "patient_id", "split", "label"), split_rows),
                               ("images.csv", ("image_id", "path", "width", "height"), image_rows),
                               ("boxes.csv", ("image_id", "x0", "y0", "x1", "y1"), box_rows)):
        with open(prepared / name, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    for size in cache_sizes:
        write_image_cache(root, dataset, size)
    return root
