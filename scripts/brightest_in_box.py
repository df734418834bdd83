"""How often the brightest pixel of a positive test scan lies inside one of its boxes.

    .venv/bin/python scripts/brightest_in_box.py [PROJECT]      # default: this project

A guard for "the phantoms stay as hard as they are": if the target were the brightest structure,
a network (or a plain arg-max) could find it without learning anything about its shape. Prints,
per dataset, the count over the positive test scans (original pixels, the scan's own window).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from xiqa.data.images import read_scan
from xiqa.data.splits import load_prepared
from xiqa.paths import prepared_dir, raw_dir
from xiqa.schema import DATASETS


def brightest_in_box(root: Path, dataset: str) -> tuple[int, int]:
    """``(hits, positives)``: positive test scans whose brightest pixel (first in row-major order)
    lies inside one of their boxes (inclusive pixel ranges)."""
    prepared = load_prepared(prepared_dir(root, dataset))
    frame = prepared.splits.merge(prepared.boxes, on="image_id").merge(prepared.images, on="image_id")
    hits = positives = 0
    for row in frame[(frame["split"] == "test") & (frame["label"].astype(int) == 1)].itertuples():
        scan = read_scan(raw_dir(root, dataset) / row.path)
        y, x = np.unravel_index(int(np.argmax(scan)), scan.shape)
        positives += 1
        hits += any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in row.boxes)
    return hits, positives


if __name__ == "__main__":
    project = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    for ds in DATASETS:
        if prepared_dir(project, ds).is_dir():
            hits, n = brightest_in_box(project, ds)
            print(f"{ds}: brightest pixel inside a box in {hits}/{n} positive test scans")
