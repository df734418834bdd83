"""Phantom generation: seconds per image at demo and paper sizes, against baselines in one run.

    python benchmarks/phantoms.py [--repeats N] [--paper/--no-paper]

For Object-CXR (224-288 px demo, 1800-2200 px paper) and LVOT (128 px demo, 256 px paper) it
prints, per size:

- ``ours``: seconds per image of :func:`xiqa.data.phantoms.objectcxr_image` /
  :func:`~xiqa.data.phantoms.lvot_slice` (the Object-CXR radiograph decode is cached and excluded);
- ``write``: seconds to encode that image in its dataset format (JPEG q95 / PNG), the floor that
  writing real data would cost anyway, and ours / write;
- ``us/px``: microseconds per pixel, so that demo and paper rows show whether the cost is linear
  in the number of pixels (about equal) or not.

Times are the minimum over ``--repeats`` runs of a fixed set of images (seed 0): the minimum is
the least disturbed by other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xiqa.data import phantoms
from xiqa.data.images import write_jpeg, write_png
from xiqa.data.phantoms import chest


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _make_all(make: list[Callable[[], object]]) -> None:
    for m in make:
        m()


def _write_all(write: Callable[[Path, Any], object], path: Path, images: list) -> None:
    for img in images:
        write(path, img)


def main() -> None:
    """Parse the options and print seconds per phantom image against the image write."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    cases = [("objectcxr demo", "cxr", (224, 288), 8), ("lvot demo", "lvot", (128, 128), 8)]
    if args.paper:
        cases += [("objectcxr paper", "cxr", (1800, 2200), 2), ("lvot paper", "lvot", (256, 256), 8)]
    chest._radiograph_pixels()  # the one-off decode is not per image
    print(f"{'case':16s} {'ours s/img':>11s} {'write s/img':>12s} {'ours/write':>11s} {'us/px':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, sizes, n in cases:
            if kind == "cxr":
                make = [partial(phantoms.objectcxr_image, i, i % 2, 0, *sizes) for i in range(n)]
                write, suffix = write_jpeg, ".jpg"
            else:
                make = [partial(phantoms.lvot_slice, i, 0, i % 2, 0, sizes[0]) for i in range(n)]
                write, suffix = write_png, ".png"
            images = [m()[0] for m in make]  # warm-up, and the images to write
            ours = _best(partial(_make_all, make), args.repeats) / n
            path = Path(tmp) / f"x{suffix}"
            floor = _best(partial(_write_all, write, path, images), args.repeats) / n
            pixels = sum(img.size for img in images) / n
            print(f"{name:16s} {ours:11.4f} {floor:12.4f} {ours / floor:11.1f} "
                  f"{ours / pixels * 1e6:7.3f}")


if __name__ == "__main__":
    main()
