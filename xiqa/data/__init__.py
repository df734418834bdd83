"""Datasets: import and validation of the real formats, synthetic phantoms, patient-wise splits.

- :mod:`xiqa.data.objectcxr`  Object-CXR (``train/``, ``dev/``, ``train.csv``, ``dev.csv``)
- :mod:`xiqa.data.lvot`       LVOT (``manifest.csv``: ``patient_id, image, mask, label``)
- :mod:`xiqa.data.phantoms`   seeded synthetic data written in exactly those formats
- :mod:`xiqa.data.splits`     ``splits.csv`` / ``boxes.csv`` / ``images.csv`` and their reader
- :mod:`xiqa.data.images`     one reader for PNG/JPEG/NPY/DICOM scans
- :mod:`xiqa.data.datasets`   the table of what differs per dataset (reader, importer, phantoms)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None,
          enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` behind a rich progress bar on stderr (a plain loop when ``enabled`` is
    false, as in library calls and tests)."""
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total,
                          console=Console(stderr=True), transient=False)
