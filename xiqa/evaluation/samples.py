"""The figure sample of one model, as the evaluate stage saves it (NumPy only, no plotting).

It lives with the evaluation that writes it (the report reads it, :mod:`xiqa.report.figures`
draws it), so the evaluate stage imports neither the report layer nor matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xiqa.errors import XiqaError
from xiqa.io import atomic_path


@dataclass
class SampleMaps:
    """The figure sample of one model: scans, boxes, maps (off / on) and Pointing Game peaks.

    ``images`` uint8 ``[K, H, W]``; ``boxes`` one float ``[B, 4]`` per image (input pixels);
    ``maps[smoothed]`` uint8 ``[K, M, H, W]`` (display only); ``peaks[smoothed]`` float
    ``[K, M, 2]`` (x, y); ``hits[smoothed]`` float ``[K, M]``.
    """

    image_ids: list[str]
    methods: list[str]
    images: np.ndarray
    boxes: list[np.ndarray]
    maps: dict[bool, np.ndarray]
    peaks: dict[bool, np.ndarray]
    hits: dict[bool, np.ndarray]

    def save(self, path: Path) -> Path:
        """Write the sample as one ``.npz`` file (no pickles) at ``path``; returns ``path``."""
        flat = [np.c_[np.full(len(b), k), np.asarray(b, dtype=float).reshape(-1, 4)]
                for k, b in enumerate(self.boxes)]
        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh, image_ids=np.array(self.image_ids), methods=np.array(self.methods),
                    images=self.images, boxes=np.concatenate(flat) if flat else np.zeros((0, 5)),
                    maps_off=self.maps[False], maps_on=self.maps[True],
                    peaks_off=self.peaks[False], peaks_on=self.peaks[True],
                    hits_off=self.hits[False], hits_on=self.hits[True])
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> SampleMaps:
        """Read a sample written by :meth:`save`; a broken file is a :class:`XiqaError` naming it."""
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise XiqaError(f"{path}: cannot read the figure sample maps ({err})") from None
        ids = [str(x) for x in z["image_ids"]]
        flat = z["boxes"]
        boxes = [flat[flat[:, 0] == k, 1:] for k in range(len(ids))]
        return cls(ids, [str(x) for x in z["methods"]], z["images"], boxes,
                   {False: z["maps_off"], True: z["maps_on"]},
                   {False: z["peaks_off"], True: z["peaks_on"]},
                   {False: z["hits_off"], True: z["hits_on"]})


def to_uint8(maps: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 for display (the Pointing Game never sees these)."""
    return np.clip(np.rint(np.asarray(maps, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


