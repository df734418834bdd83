"""FractalDB-style images rendered in-process: the formula-driven pretext of the `pretrain` stage.

Kataoka et al., "Pre-training without Natural Images" (ACCV 2020; IJCV 2022): a *category* is
an iterated function system (IFS), a set of 2–``max_maps`` affine maps ``w_i(p) = A_i p + b_i``
chosen with probability ∝ ``|det A_i|``; an image is the attractor drawn by the chaos game. A
network pre-trained to tell the categories apart learns edges, curves and textures at every
scale without a single natural or medical image, so no label of either task and no validation
or test scan can leak into the stand-in start.

Differences from the published FractalDB, each for a few CPU minutes instead of GPU days:

- ``A_i`` are drawn by their singular values (in ``[0.25, 0.8]``, with a random rotation and
  reflection) rather than as six uniform parameters kept when the "filling rate" passes: every
  drawn system is contractive, so the chaos game converges without the rejection loop (the
  σ-factor idea of Anderson & Farrell, "Improving Fractal Pre-training", WACV 2022).
- Each instance perturbs every map's parameters by ±``jitter`` (FractalDB weights one parameter),
  is drawn at a random scale, position, rotation and flip, with a random gray level on a random
  gray background and pixel noise, so a category cannot be memorised from one silhouette.

Everything is seeded: the same ``seed`` gives the same categories and the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FractalSystem:
    """One category: ``maps`` float64 ``[m, 2, 3]`` (``[A | b]``) and their probabilities ``[m]``."""

    maps: np.ndarray
    probabilities: np.ndarray


def _affine(rng: np.random.Generator) -> np.ndarray:
    def rotation(theta: float) -> np.ndarray:
        return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])

    s = np.diag(rng.uniform(0.25, 0.8, 2))
    a = rotation(rng.uniform(0, 2 * np.pi)) @ s @ rotation(rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.5:
        a = a @ np.diag([1.0, -1.0])
    return np.concatenate([a, rng.uniform(-1, 1, (2, 1))], axis=1)


def draw_system(rng: np.random.Generator, max_maps: int = 4) -> FractalSystem:
    """A random contractive IFS of 2 to ``max_maps`` maps."""
    m = int(rng.integers(2, max_maps + 1))
    maps = np.stack([_affine(rng) for _ in range(m)])
    det = np.abs(np.linalg.det(maps[:, :, :2]))
    return FractalSystem(maps, det / det.sum())


def chaos_game(system: FractalSystem, rng: np.random.Generator, points: int = 4000,
               steps: int = 24, keep: int = 8) -> np.ndarray:
    """Points on the attractor, float64 ``[points * keep, 2]``: ``points`` parallel chains,
    ``steps`` jumps each (the first ``steps - keep`` discarded while they converge)."""
    p = rng.uniform(-1, 1, (points, 2))
    cumulative = np.cumsum(system.probabilities)
    out = []
    for step in range(steps):
        choice = np.searchsorted(cumulative, rng.random(points), side="right").clip(max=len(cumulative) - 1)
        nxt = np.empty_like(p)
        for i, m in enumerate(system.maps):  # a few maps: one matrix product per map
            sel = choice == i
            nxt[sel] = p[sel] @ m[:, :2].T + m[:, 2]
        p = nxt
        if step >= steps - keep:
            out.append(p)
    return np.concatenate(out)


def render(system: FractalSystem, size: int, rng: np.random.Generator, jitter: float = 0.1,
           points: int = 4000) -> np.ndarray:
    """One instance of ``system``: uint8 ``[size, size]`` (see the module doc for the variation)."""
    maps = system.maps * rng.uniform(1 - jitter, 1 + jitter, system.maps.shape)
    det = np.abs(np.linalg.det(maps[:, :, :2])) + 1e-12
    pts = chaos_game(FractalSystem(maps, det / det.sum()), rng, points)
    pts = pts[np.isfinite(pts).all(axis=1)]
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    span = max(float((hi - lo).max()), 1e-9)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    if rng.random() < 0.5:
        rot = rot @ np.diag([1.0, -1.0])
    extent = rng.uniform(0.45, 0.95) * size
    centre = rng.uniform(0.3, 0.7, 2) * size
    xy = ((pts - (lo + hi) / 2) / span) @ rot.T * extent + centre
    ij = np.floor(xy).astype(np.int64)
    inside = ((ij >= 0) & (ij < size)).all(axis=1)
    density = np.zeros((size, size))
    np.add.at(density, (ij[inside, 1], ij[inside, 0]), 1.0)
    mark = np.log1p(density) / max(np.log1p(density).max(), 1e-9)
    background = rng.uniform(0.0, 0.6)
    level = rng.uniform(0.3, 1.0) * rng.choice([-1.0, 1.0])
    image = background + level * mark + rng.normal(0, rng.uniform(0.0, 0.05), (size, size))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def fractal_dataset(classes: int, per_class: int, size: int, seed: int = 0,
                    jitter: float = 0.1, points: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """``classes`` seeded categories × ``per_class`` instances: uint8 images ``[N, 1, S, S]``
    and int64 labels ``[N]`` (class-major order). Category ``c`` depends only on ``(seed, c)``
    and instance ``j`` only on ``(seed, c, j)``, so growing either count keeps the others."""
    images = np.empty((classes * per_class, 1, size, size), np.uint8)
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    for c in range(classes):
        system = draw_system(np.random.default_rng([seed, 0, c]))
        for j in range(per_class):
            images[c * per_class + j, 0] = render(system, size, np.random.default_rng([seed, 1, c, j]),
                                                  jitter, points)
    return images, labels
