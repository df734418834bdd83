"""The foreign objects and the distractors of the chest phantoms (:mod:`~xiqa.data.phantoms.chest`).

- Foreign objects (positives: 1-4) are coins, buttons (plastic or metal), clips, wires and leads,
  bead chains, ECG electrodes (a faint pad with a metal snap) and pins, drawn in millimetres at
  their real sizes (the field is 330-430 mm wide), centred in the traced lung fields, rasterised
  with partial-volume edges and the image's blur, and *added to the attenuation* before the
  display curve with a per-object contrast (faint plastic to saturating metal): they blend with
  the anatomy, and many are no brighter than bone. Boxes are the tight boxes of the pixels an
  object changes (T=1 ellipses and T=0 rectangles by their corners, T=2 polygons as the convex
  hull of those pixels), kept apart so that each box holds one object.
- Non-label distractors from a label-independent stream, in positives and negatives alike: a lead
  "L"/"R" marker (metal, p = 0.85) in an upper corner and burned-in text (p = 0.6).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import gaussian_filter

from xiqa.data.lvot import mask_to_box
from xiqa.errors import XiqaError

if TYPE_CHECKING:  # the chest module imports this one
    from xiqa.data.phantoms.chest import Patient

# Foreign objects: each kind draws shapes in millimetres around its own origin (module doc).
# A shape is ("poly", points, value) or ("line", points, width, value); value 0-1 is the
# relative thickness (later painted in drawing order, so a hole is a shape of value 0).
# A kind returns its annotation type, its shapes and its contrast range (attenuation units).
_Kind = tuple[int, list[tuple], tuple[float, float]]


def _ellipse_pts(rx: float, ry: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[rx * np.cos(t), ry * np.sin(t)]


def _curve(rng: np.random.Generator, length: float, step: float, bend: float) -> np.ndarray:
    """A smooth random curve of ``length`` mm through the origin (points ``step`` mm apart)."""
    n = max(3, int(length / step))
    turn = gaussian_filter(rng.normal(0, bend, n), 3) * np.sqrt(3)
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(turn)
    pts = np.cumsum(np.c_[np.cos(heading), np.sin(heading)] * step, axis=0)
    return pts - pts[n // 2]


def _disc(r: float, centre: tuple[float, float] = (0.0, 0.0), n: int = 48) -> np.ndarray:
    return _ellipse_pts(r, r, n) + np.asarray(centre)


def _coin(rng: np.random.Generator) -> _Kind:
    d = rng.uniform(16, 30)  # seen slightly obliquely
    return 1, [("poly", _ellipse_pts(d / 2, d / 2 * rng.uniform(0.75, 1.0)), 1.0)], (0.6, 1.5)


def _button(rng: np.random.Generator) -> _Kind:
    d = rng.uniform(10, 24)
    holes = int(rng.choice([2, 4]))
    shapes = [("poly", _disc(d / 2), 1.0), ("poly", _disc(d / 2.8), 0.8)]  # a raised rim
    for k in range(holes):
        a = 2 * np.pi * k / holes + np.pi / 4
        shapes.append(("poly", _disc(d / 14, (d / 7 * np.cos(a), d / 7 * np.sin(a)), 12), 0.0))
    metal = rng.random() < 0.4
    return 1, shapes, (0.5, 1.2) if metal else (0.05, 0.25)


def _clip(rng: np.random.Generator) -> _Kind:
    """A paper clip: one wire bent into three nested loops."""
    length, wide, w = rng.uniform(25, 45), rng.uniform(7, 10), rng.uniform(0.8, 1.2)
    x0, x1 = -length / 2, length / 2
    path = [(x1, wide / 2), (x0, wide / 2), (x0, -wide / 2), (x1 - 3, -wide / 2),
            (x1 - 3, wide / 4), (x0 + 4, wide / 4), (x0 + 4, -wide / 5), (x1 - 7, -wide / 5)]
    return 0, [("line", np.array(path), w, 1.0)], (0.6, 1.5)


def _wire(rng: np.random.Generator) -> _Kind:
    pts = _curve(rng, rng.uniform(40, 150), 2.0, 0.12)
    shapes = [("line", pts, rng.uniform(1.2, 3.0), 1.0)]
    if rng.random() < 0.5:  # a connector at one end
        shapes.append(("line", pts[-4:], rng.uniform(3.5, 6), 1.0))
    return 2, shapes, (0.3, 1.0)


def _chain(rng: np.random.Generator) -> _Kind:
    pts = _curve(rng, rng.uniform(60, 200), 0.5, 0.04)
    bead = rng.uniform(1.8, 4.0)
    step = max(1, int(round(bead * 1.25 / 0.5)))
    shapes = [("poly", _disc(bead / 2, tuple(p), 12), 1.0) for p in pts[::step]]
    if rng.random() < 0.4:  # a pendant
        shapes.append(("poly", _ellipse_pts(6, 8) + pts[len(pts) // 2] + [0, 8], 1.0))
    return 2, shapes, (0.5, 1.3)


def _electrode(rng: np.random.Generator) -> _Kind:
    """An ECG electrode: a nearly radiolucent foam pad around a metal snap."""
    d, snap = rng.uniform(30, 50), rng.uniform(8, 12)
    pad = rng.uniform(0.04, 0.15)
    shapes = [("poly", _disc(d / 2), pad), ("poly", _disc(snap / 2), 1.0),
              ("poly", _disc(snap / 4), pad + 0.2)]
    return 1, shapes, (0.6, 1.3)


def _pin(rng: np.random.Generator) -> _Kind:
    half = rng.uniform(10, 22.5)
    if rng.random() < 0.5:  # straight pin with a round head
        shaft = np.array([[-half, 0], [half, 0]])
        return 2, [("line", shaft, rng.uniform(0.6, 1.0), 1.0),
                   ("poly", _disc(1.5, (-half, 0), 12), 1.0)], (0.6, 1.5)
    wide = rng.uniform(4, 7)  # safety pin: two shafts, a coil and a clasp
    shafts = np.array([[-half, 0], [half, wide / 2], [-half, wide]])
    clasp = np.array([[half - 1, -1], [half + 3, -1], [half + 3, wide + 1], [half - 1, wide + 1]])
    return 2, [("line", shafts, 0.9, 1.0), ("poly", _disc(2.2, (-half, wide / 2), 16), 1.0),
               ("poly", clasp, 1.0)], (0.6, 1.5)


OBJECT_KINDS = {"coin": _coin, "button": _button, "clip": _clip, "wire": _wire, "chain": _chain,
                "electrode": _electrode, "pin": _pin}


def _render(shapes: list[tuple], angle: float, mm: float, blur: float, supersample: int = 4
            ) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise ``shapes`` (mm, rotated by ``angle``) at ``mm`` millimetres per pixel with
    partial-volume edges (``supersample`` x ``supersample`` sub-pixels) and the detector blur.
    Returns the float32 thickness patch ``[h, w]`` and the pixel position of the shapes'
    origin in it (x, y)."""
    from PIL import Image, ImageDraw

    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    placed = [(s[0], s[1] @ rot.T / mm, *s[2:]) for s in shapes]
    reach = max([s[2] / mm for s in placed if s[0] == "line"] + [0]) + 4 * blur + 2
    lo = np.floor(np.min([p[1].min(0) for p in placed], axis=0) - reach)
    hi = np.ceil(np.max([p[1].max(0) for p in placed], axis=0) + reach)
    w, h = (hi - lo).astype(int)
    ss = supersample
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    for s in placed:
        pts = [tuple(p) for p in ((s[1] - lo) * ss).tolist()]
        if s[0] == "poly":
            draw.polygon(pts, fill=int(round(255 * s[2])))
        else:
            width = max(1, int(round(s[2] / mm * ss)))  # s[2]: the line's width in mm
            draw.line(pts, fill=int(round(255 * s[3])), width=width, joint="curve")
    arr = np.asarray(canvas, dtype=np.float32).reshape(h, ss, w, ss).mean(axis=(1, 3)) / 255
    return gaussian_filter(arr, blur), -lo


def foreign_objects(patient: Patient, rng: np.random.Generator
                    ) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """1-4 foreign objects of :data:`OBJECT_KINDS` centred in the patient's lung fields, boxes
    apart. Returns the attenuation they add (float32 ``[H, W]``, 0 outside their boxes) and
    their annotation objects ``(type, coords)``: T=1 ellipses and T=0 rectangles by their box
    corners, T=2 polygons as the convex hull of the pixels they change."""
    from scipy.spatial import ConvexHull

    height, width = patient.attenuation.shape
    added = np.zeros((height, width), dtype=np.float32)
    candidates = np.flatnonzero(patient.lungs & (patient.collimation[0] < 0.01))
    if candidates.size == 0:
        candidates = np.arange(height * width)
    objects: list[tuple[int, list[float]]] = []
    taken: list[tuple[int, int, int, int]] = []
    n = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))
    names = list(OBJECT_KINDS)
    for _ in range(20 * n):
        if len(objects) == n:
            break
        kind, shapes, contrast = OBJECT_KINDS[names[int(rng.integers(len(names)))]](rng)
        patch, origin = _render(shapes, rng.uniform(0, 2 * np.pi), patient.mm, patient.blur)
        patch = np.where(patch >= 0.01 * patch.max(), patch, 0) * rng.uniform(*contrast)
        cy, cx = divmod(int(rng.choice(candidates)), width)
        x0, y0 = cx - int(round(origin[0])), cy - int(round(origin[1]))
        ys = slice(max(y0, 0), min(y0 + patch.shape[0], height))
        xs = slice(max(x0, 0), min(x0 + patch.shape[1], width))
        piece = patch[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        local = mask_to_box(piece > 0)
        if local is None:
            continue
        box = (local[0] + xs.start, local[1] + ys.start, local[2] + xs.start, local[3] + ys.start)
        if any(box[0] <= t[2] + 2 and t[0] <= box[2] + 2 and box[1] <= t[3] + 2
               and t[1] <= box[3] + 2 for t in taken):
            continue  # boxes apart, so that every box holds one object
        taken.append(box)
        added[ys, xs] += piece
        if kind == 2:
            py, px = np.nonzero(piece > 0)
            pts = np.c_[px + xs.start, py + ys.start]
            if len(pts) >= 3 and np.ptp(pts[:, 0]) > 0 and np.ptp(pts[:, 1]) > 0:
                pts = pts[ConvexHull(pts).vertices]
            objects.append((2, pts.reshape(-1).astype(float).tolist()))
        else:
            objects.append((kind, [float(c) for c in box]))
    if not objects:
        raise XiqaError("phantom generation placed no foreign object (image too small?)")
    return added, objects


@functools.lru_cache(maxsize=16)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def distractors(patient: Patient, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Label-independent things that real radiographs carry: a lead laterality marker ("L"/"R",
    metal: attenuation, float32 ``[H, W]``) in an upper corner, and burned-in text (a display
    overlay, float32 ``[H, W]`` weight of white) in a corner."""
    from PIL import Image, ImageDraw

    height, width = patient.attenuation.shape
    marker = np.zeros((height, width), dtype=np.float32)
    text = np.zeros((height, width), dtype=np.float32)
    if rng.random() < 0.85:
        size = max(6, int(round(rng.uniform(12, 22) / patient.mm)))
        letter = "L" if rng.random() < 0.5 else "R"
        canvas = Image.new("L", (2 * size, 2 * size), 0)
        draw = ImageDraw.Draw(canvas)
        draw.rectangle([0, 0, 2 * size - 1, 2 * size - 1], fill=40)  # the plastic holder
        draw.text((size, size), letter, fill=255, font=_font(size), anchor="mm")
        patch = gaussian_filter(np.asarray(canvas, dtype=np.float32) / 255, patient.blur)
        x0 = int(rng.uniform(0.03, 0.2) * width) if rng.random() < 0.5 else \
            int(rng.uniform(0.8, 0.97) * width) - 2 * size
        y0 = int(rng.uniform(0.03, 0.2) * height)
        ph, pw = patch[: height - y0, : width - x0].shape
        marker[y0: y0 + ph, x0: x0 + pw] = patch[:ph, :pw] * rng.uniform(0.5, 1.3)
    if rng.random() < 0.6:
        words = ["PA", "AP", "ERECT", "SUPINE", "PORTABLE", "CHEST", "INSP"]
        line = " ".join(rng.choice(words, int(rng.integers(1, 3)), replace=False))
        if rng.random() < 0.5:
            line += f" {int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}"
        size = max(6, int(round(rng.uniform(0.025, 0.045) * height)))
        canvas = Image.new("L", (width, height), 0)
        xy = (int(rng.uniform(0.02, 0.1) * width), int(rng.choice([0.02, 0.9]) * height))
        ImageDraw.Draw(canvas).text(xy, line, fill=255, font=_font(size))
        text = np.asarray(canvas, dtype=np.float32) / 255
    return marker, text

