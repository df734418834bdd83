"""Seeded random streams and smooth random fields, shared by the chest and the cardiac phantoms.

Every purpose draws from its own ``numpy`` ``Generator`` stream, seeded by ``(seed, stream id,
index...)``, so that a positive and its negative twin share their background stream and differ
only where the label's own stream draws.
"""

from __future__ import annotations

import numpy as np

# Independent random streams per purpose (a stream id is the second seed word).
LABELS, CHEST, OBJECTS, PATIENT, SLICE, DISTRACT = 1, 2, 3, 4, 5, 6


def seeded_rng(seed: int, stream: int, *index: int) -> np.random.Generator:
    """The generator of ``stream`` (one of the ids above) for ``seed`` and an image's ``index``."""
    return np.random.default_rng([int(seed), stream, *map(int, index)])


def balanced_labels(n: int, seed: int) -> np.ndarray:
    """``n`` labels (int64), ``n // 2`` of them 1, in a seeded random order."""
    labels = np.zeros(n, dtype=np.int64)
    labels[: n // 2] = 1
    return seeded_rng(seed, LABELS).permutation(labels)


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int) -> np.ndarray:
    """A smooth random field ``[H, W]`` of roughly unit scale: ``cells`` x ``cells`` N(0, 1)
    weights of Gaussian bumps spread evenly over the image (a separable sum, so the cost is
    linear in the number of pixels)."""
    coarse = rng.standard_normal((cells, cells))

    def basis(n: int) -> np.ndarray:
        t = (np.arange(n) + 0.5) / n * cells - 0.5
        b = np.exp(-0.5 * ((t[:, None] - np.arange(cells)[None, :]) / 0.7) ** 2)
        return b / b.sum(axis=1, keepdims=True)

    return (basis(shape[0]) @ coarse @ basis(shape[1]).T).astype(np.float32) * 1.5

