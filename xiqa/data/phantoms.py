"""Seeded synthetic phantoms, written in exactly the real distribution formats (SPEC 2.3), that
behave like the modalities rather than being made easy.

The same import code reads phantoms and real data: :func:`write_objectcxr` writes ``train/``,
``dev/`` JPEGs with ``train.csv`` / ``dev.csv``; :func:`write_lvot` writes a ``manifest.csv`` with
PNG slices and PNG masks. ``docs/PHANTOMS.md`` shows contact sheets (``scripts/contact_sheets.py``).

Object-CXR (chest radiographs with foreign objects):

- Anatomy is a real chest CR, pydicom-data's ``RG1_UNCR.dcm`` (MONOCHROME1, inverted so that
  attenuation is bright), decoded once per process and reduced by block means to a working
  resolution for the requested size. Each image is a different "patient": the radiograph is
  cropped and scaled (the output covers 70-100 % of it), flipped (p = 0.5), rotated (+-6 deg),
  stretched (+-10 % per axis), elastically warped (a smooth displacement of 1-2.5 % of its side),
  unsharp-masked (vendor processing of random strength), given a smooth exposure gradient and a
  detector blur, shown through a random window and gamma, collimated on 0-4 sides and given
  quantum noise. Ribs, clavicles, spine, heart borders, diaphragm and collimation edges are
  therefore the real ones, moved and re-exposed.
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

LVOT (bSSFP cine, 4-chamber view), drawn in millimetres on a 320-400 mm field of view:

- Bright blood in four cavities, grey myocardium and septum, open or closed atrioventricular
  valves, a papillary muscle and a moderator band; bright epicardial fat (thicker in the
  atrioventricular grooves) and subcutaneous fat; grey chest wall, paraspinal muscle, liver and
  vertebra; dark lungs with a few vessels; the descending aorta behind the left atrium.
- Per patient: heart position (its middle within 10 % of the field from the image centre), size,
  orientation (apex 35-85 deg above the horizontal, to the right), cavity sizes, tissue levels
  (+-15 %), body habitus, fat thickness, coil reach; per slice: +-3 mm, +-3 deg and the cardiac
  phase. A point-spread blur, a coil bias field (anterior and posterior arrays times a smooth
  random field) and Rician noise (the magnitude of complex Gaussian noise) follow; 8-bit scaling
  is fixed per slice from the blood level and the bias, not from the pixels.
- The label: in about half of the slices the left-ventricular outflow tract, a channel of blood
  (radius 8-12 mm, the blood level times 0.85-1.0) from the basal septal LV toward the aortic
  root between the atria, with a thin dark wall. It is blood: its level is the blood pool's,
  not above it. Its mask is every pixel it changes (lumen and wall); the box is the mask's
  tight box.

Both datasets: labels are a seeded balanced permutation; the background of an image comes from
its own stream seeded by ``(seed, index)`` and drawn identically whatever the label, and the
objects from a separate stream, so a positive differs from its negative twin only inside its
boxes (Object-CXR) or on its mask (LVOT). Nothing here is tuned to make a method score well.

Determinism: numpy ``Generator`` streams, fixed JPEG settings (quality 95, no subsampling, no
EXIF) and PNGs without timestamps, so a seed gives the same bytes on the same library versions.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from xiqa.data import track
from xiqa.data.images import write_jpeg, write_png
from xiqa.data.lvot import MANIFEST, mask_to_box
from xiqa.data.objectcxr import format_annotation, parse_annotation
from xiqa.errors import XiqaError

# Independent random streams per purpose (a stream id is the second seed word).
_LABELS, _CHEST, _OBJECTS, _PATIENT, _SLICE, _DISTRACT = 1, 2, 3, 4, 5, 6


def _rng(seed: int, stream: int, *index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, *map(int, index)])


def _balanced_labels(n: int, seed: int) -> np.ndarray:
    labels = np.zeros(n, dtype=np.int64)
    labels[: n // 2] = 1
    return _rng(seed, _LABELS).permutation(labels)


# --------------------------------------------------------------------------- Object-CXR
RADIOGRAPH = "RG1_UNCR.dcm"  # pydicom-data's real chest CR (PA, MONOCHROME1, 1955 x 1841)
# The lung fields of RADIOGRAPH, traced by hand as polygons in fractions (x / width, y / height)
# of the image; objects are centred inside them, as Object-CXR annotates objects in the lungs.
_LUNG_POLYGONS = (
    ((0.20, 0.11), (0.31, 0.08), (0.41, 0.11), (0.43, 0.23), (0.41, 0.40), (0.40, 0.58),
     (0.37, 0.71), (0.25, 0.73), (0.11, 0.76), (0.10, 0.61), (0.12, 0.38), (0.15, 0.20)),
    ((0.59, 0.09), (0.71, 0.08), (0.81, 0.17), (0.88, 0.35), (0.91, 0.58), (0.91, 0.77),
     (0.78, 0.72), (0.68, 0.64), (0.60, 0.51), (0.57, 0.31)),
)
FIELD_MM = (330.0, 430.0)  # Object-CXR phantoms: the radiograph's width per patient, mm


@functools.lru_cache(maxsize=1)
def _radiograph_pixels() -> np.ndarray:
    """RADIOGRAPH decoded once per process: float32 ``[1955, 1841]``, MONOCHROME1 inverted so
    that attenuation is bright, scaled so that its 0.5th / 99.8th percentiles are 0 / 1."""
    import pydicom
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file(RADIOGRAPH, download=False)  # never the network
    except Exception as err:  # a broken pydicom-data install: say what is missing
        raise XiqaError(f"cannot look up {RADIOGRAPH} in pydicom's data stores "
                        f"({type(err).__name__}: {err})") from None
    if path is None:
        raise XiqaError(f"the Object-CXR phantoms need the real chest radiograph {RADIOGRAPH} "
                        "from the PyPI package pydicom-data, which is not installed "
                        "(pip install pydicom-data)")
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = arr.max() - arr
    lo, hi = np.percentile(arr, (0.5, 99.8))
    return (arr - lo) / (hi - lo)


@functools.lru_cache(maxsize=4)
def _radiograph(factor: int) -> tuple[np.ndarray, np.ndarray]:
    """RADIOGRAPH reduced by block means of ``factor`` x ``factor`` pixels (float32 ``[h, w]``)
    and its lung fields at that resolution (bool ``[h, w]``)."""
    from PIL import Image, ImageDraw

    full = _radiograph_pixels()
    h, w = full.shape[0] // factor, full.shape[1] // factor
    img = full[: h * factor, : w * factor].reshape(h, factor, w, factor).mean(axis=(1, 3))
    canvas = Image.new("L", (w, h), 0)
    for polygon in _LUNG_POLYGONS:
        ImageDraw.Draw(canvas).polygon([(x * w, y * h) for x, y in polygon], fill=1)
    return img.astype(np.float32), np.asarray(canvas, dtype=bool)


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int) -> np.ndarray:
    """A smooth random field ``[H, W]`` of roughly unit scale: ``cells`` x ``cells`` N(0, 1)
    weights of Gaussian bumps spread evenly over the image (a separable sum, so the cost is
    linear in the number of pixels)."""
    coarse = rng.standard_normal((cells, cells))

    def basis(n: int) -> np.ndarray:
        t = (np.arange(n) + 0.5) / n * cells - 0.5
        b = np.exp(-0.5 * ((t[:, None] - np.arange(cells)[None, :]) / 0.7) ** 2)
        return b / b.sum(axis=1, keepdims=True)

    return (basis(shape[0]) @ coarse @ basis(shape[1]).T).astype(np.float32) * 1.5


def _lowpass(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of width ``sigma`` pixels, computed on a reduced copy when ``sigma``
    is large so that the cost stays linear in the number of pixels."""
    from scipy.ndimage import zoom

    r = max(1, int(sigma // 4))
    if r == 1:
        return gaussian_filter(img, sigma)
    h, w = img.shape[0] // r * r, img.shape[1] // r * r
    small = img[:h, :w].reshape(h // r, r, w // r, r).mean(axis=(1, 3))
    small = gaussian_filter(small, sigma / r, mode="nearest")
    return zoom(small, (img.shape[0] / small.shape[0], img.shape[1] / small.shape[1]), order=1,
                mode="nearest", grid_mode=True)[: img.shape[0], : img.shape[1]]


class _Patient:
    """One chest "patient": the real radiograph warped, cropped, scaled, flipped and processed.

    ``attenuation`` is float32 ``[H, W]`` before the display curve (bone ~0.6-0.9, lungs ~0.2-0.4,
    air ~0); ``lungs`` marks the warped lung fields; ``mm`` is the pixel size in millimetres.
    """

    def __init__(self, height: int, width: int, max_size: int, rng: np.random.Generator):
        from scipy.ndimage import map_coordinates

        # the working resolution: the radiograph reduced until the output still samples it finer
        # than its pixels (the output covers at least 70 % of it)
        factor = max(1, int(0.7 * min(_radiograph_pixels().shape) / max_size))
        src, lung_src = _radiograph(factor)
        sh, sw = src.shape
        # crop and scale: the output covers 70-100 % of the radiograph's limiting side
        scale = rng.uniform(0.7, 1.0) * min(sh / height, sw / width)
        angle = np.deg2rad(rng.uniform(-6, 6))
        stretch = rng.uniform(0.9, 1.1, 2)  # body habitus: wider / taller chests
        flip = rng.random() < 0.5
        slack = np.array([sw - scale * width, sh - scale * height]) / 2
        centre = np.array([sw, sh]) / 2 + rng.uniform(-1, 1, 2) * np.maximum(slack, 0) * 0.8
        self.mm = float(rng.uniform(*FIELD_MM) / sw * scale)  # millimetres per output pixel
        x = (np.arange(width, dtype=np.float32) + 0.5 - width / 2)[None, :]
        y = (np.arange(height, dtype=np.float32) + 0.5 - height / 2)[:, None]
        px = x * (scale * (-1 if flip else 1) * stretch[0])
        py = y * (scale * stretch[1])
        # elastic: a smooth displacement of up to a few per cent of the radiograph's side
        amp = rng.uniform(0.01, 0.025) * min(sh, sw)
        px = px + amp * _smooth_field((height, width), rng, 4)
        py = py + amp * _smooth_field((height, width), rng, 4)
        sx = centre[0] + np.cos(angle) * px - np.sin(angle) * py - 0.5
        sy = centre[1] + np.sin(angle) * px + np.cos(angle) * py - 0.5
        att = map_coordinates(src, [sy, sx], order=1, mode="nearest").astype(np.float32)
        iy = np.clip(np.round(sy).astype(np.int64), 0, sh - 1)
        ix = np.clip(np.round(sx).astype(np.int64), 0, sw - 1)
        self.lungs = lung_src[iy, ix]
        # processing and habitus: unsharp masking (equalisation) of a random strength, a soft
        # tissue / exposure gradient, the detector's blur
        side = min(height, width)
        att = att + rng.uniform(0.0, 1.2) * (att - _lowpass(att, 0.06 * side))
        att = att + rng.uniform(0.01, 0.05) * _smooth_field((height, width), rng, 3)
        self.blur = float(rng.uniform(0.3, 1.0))
        self.attenuation = gaussian_filter(att, self.blur).astype(np.float32)
        # display: window, shoulder and gamma; the collimation; quantum noise
        self.window = (rng.uniform(-0.1, 0.08), rng.uniform(0.95, 1.2))
        self.gamma = rng.uniform(0.7, 1.4)
        self.collimation = _collimation(height, width, rng)
        self.noise = (rng.uniform(0.004, 0.02) * rng.standard_normal((height, width))
                      ).astype(np.float32)

    def display(self, attenuation: np.ndarray) -> np.ndarray:
        """The display curve: float ``[H, W]`` in ``[0, 1]`` (0 black, 1 white)."""
        lo, hi = self.window
        x = np.clip((attenuation - lo) / (hi - lo), 0, 1)
        img = x ** self.gamma
        weight, level = self.collimation
        return img + (level - img) * weight


def _collimation(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Collimator blades on 0-4 sides: a soft-edged weight ``[H, W]`` (1 outside the field) and
    the display level there (white: unexposed plate; black: an electronic shutter)."""
    tilt = np.deg2rad(rng.uniform(-2, 2))
    blades = [(axis, side, rng.uniform(0.005, 0.06)) for axis in (0, 1) for side in (0, 1)
              if rng.random() < 0.4]
    level = 1.0 if rng.random() < 0.7 else 0.0
    weight = np.zeros((height, width), dtype=np.float32)
    if not blades:
        return weight, level
    u = ((np.arange(width, dtype=np.float32) + 0.5) / width - 0.5)[None, :]
    v = ((np.arange(height, dtype=np.float32) + 0.5) / height - 0.5)[:, None]
    rotated = (u * np.cos(tilt) - v * np.sin(tilt) + 0.5, u * np.sin(tilt) + v * np.cos(tilt) + 0.5)
    edge = 1.0 / min(height, width)
    for axis, side, margin in blades:
        dist = (rotated[axis] if side == 0 else 1 - rotated[axis]) - margin
        weight = np.maximum(weight, 0.5 * (1 - np.tanh(dist / edge)))
    return weight, level


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


def foreign_objects(patient: _Patient, rng: np.random.Generator
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


def _distractors(patient: _Patient, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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


def objectcxr_image(index: int, label: int, seed: int, min_size: int, max_size: int
                    ) -> tuple[np.ndarray, str]:
    """One Object-CXR phantom: uint8 ``[H, W]`` and its ``annotation`` cell ("" if label 0)."""
    rng = _rng(seed, _CHEST, index)
    height, width = (int(s) for s in rng.integers(min_size, max_size + 1, size=2))
    patient = _Patient(height, width, max_size, rng)
    marker, text = _distractors(patient, _rng(seed, _DISTRACT, index))
    attenuation = patient.attenuation + marker
    annotation = ""
    if label:
        added, objects = foreign_objects(patient, _rng(seed, _OBJECTS, index))
        attenuation = attenuation + added
        annotation = format_annotation(objects)
    img = patient.display(attenuation)
    img = img + (1 - img) * text + patient.noise
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), annotation


def write_objectcxr(target: Path | str, n_images: int, min_size: int, max_size: int, seed: int = 0,
                    progress: bool = False) -> None:
    """Write ``n_images`` chest phantoms (half positive) as an Object-CXR folder: about 90 % in
    ``train/``, 10 % in ``dev/`` (every tenth image), names ``00000.jpg`` ..."""
    if min_size > max_size:
        raise ValueError(f"min_size {min_size} > max_size {max_size}")
    target = Path(target)
    labels = _balanced_labels(n_images, seed)
    rows: dict[str, list[dict]] = {"train": [], "dev": []}
    for part in rows:
        (target / part).mkdir(parents=True, exist_ok=True)
    for i in track(range(n_images), f"generating {n_images} Object-CXR phantoms", enabled=progress):
        part = "dev" if i % 10 == 9 else "train"
        name = f"{i:05d}.jpg"
        img, annotation = objectcxr_image(i, int(labels[i]), seed, min_size, max_size)
        write_jpeg(target / part / name, img)
        rows[part].append({"image_name": name, "annotation": annotation})
    for part, part_rows in rows.items():
        pd.DataFrame(part_rows, columns=["image_name", "annotation"]).to_csv(
            target / f"{part}.csv", index=False, lineterminator="\n")


# --------------------------------------------------------------------------- LVOT
# bSSFP signal levels relative to the blood pool (per-patient jitter is applied on top).
_LEVELS = {"blood": 1.0, "fat": 0.9, "myo": 0.27, "liver": 0.32, "muscle": 0.24, "lung": 0.04,
           "marrow": 0.45}
FOV_MM = (320.0, 400.0)  # LVOT phantoms: the field of view, millimetres
# Cavities in heart coordinates (mm; a along the long axis from the crux toward the apex, b
# across it toward the LV): centre a, centre b, radius a, radius b, and the side of the
# atrioventricular plane they keep (+1 ventricles: a > -1 mm; -1 atria: a < -4 mm).
_CAVITIES = {"lv": (25, 25, 58, 19, 1), "rv": (18, -26, 50, 15, 1),
             "la": (-27, 24, 24, 20, -1), "ra": (-27, -26, 24, 21, -1)}


def _edge(d: np.ndarray, pixel: float) -> np.ndarray:
    """Partial-volume weight of a region whose signed distance (mm, < 0 inside) is ``d``."""
    return np.clip(0.5 - d / pixel, 0.0, 1.0)


def _ellipse_sd(a: np.ndarray, b: np.ndarray, ca: float, cb: float, ra: float, rb: float
                ) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipse, exact on its axes."""
    return (np.sqrt(((a - ca) / ra) ** 2 + ((b - cb) / rb) ** 2) - 1) * min(ra, rb)


def _capsule_sd(x: np.ndarray, y: np.ndarray, p0: np.ndarray, p1: np.ndarray, r: float
                ) -> np.ndarray:
    """Signed distance (mm) to the capsule of radius ``r`` around the segment p0-p1."""
    e = p1 - p0
    t = np.clip(((x - p0[0]) * e[0] + (y - p0[1]) * e[1]) / max(float(e @ e), 1e-9), 0, 1)
    return np.hypot(x - p0[0] - t * e[0], y - p0[1] - t * e[1]) - r


def _patient_anatomy(seed: int, patient: int) -> dict:
    """Per-patient geometry (mm) and tissue levels of the 4-chamber phantoms."""
    rng = _rng(seed, _PATIENT, patient)
    fov = rng.uniform(*FOV_MM)
    angle = np.deg2rad(rng.uniform(-85, -35))  # apex direction: up and to the right
    scale = rng.uniform(0.7, 0.9)
    # the operator centres the view on the heart (its middle within 10 % of the field of the
    # image centre); the crux lies 30 mm toward the base from there, the spine 60-80 mm behind
    # the crux and slightly to the patient's right, and the body around the spine
    r, phi = rng.uniform(0, 0.1) * fov, rng.uniform(0, 2 * np.pi)
    middle = np.array([r * np.cos(phi), r * np.sin(phi)])
    crux = middle - 30 * scale * np.r_[np.cos(angle), np.sin(angle)]
    spine = crux + np.r_[rng.uniform(-20, 10), rng.uniform(60, 80)]
    subcutaneous, half_ap = rng.uniform(6, 28), rng.uniform(105, 150)
    return {
        "fov": fov, "crux": crux, "angle": angle, "scale": scale, "spine": spine,
        "cavities": {k: np.r_[c[:2], np.array(c[2:4]) * rng.uniform(0.85, 1.15, 2), c[4]]
                     for k, c in _CAVITIES.items()},
        "levels": {k: v * rng.uniform(0.85, 1.15) for k, v in _LEVELS.items()},
        "body": np.r_[spine[0] + rng.uniform(-5, 5), spine[1] + 45 + subcutaneous - half_ap,
                      rng.uniform(150, 215), half_ap],
        # subcutaneous fat: thicker on one side (breast, flank) than the other
        "subcutaneous": subcutaneous, "fat_side": rng.uniform(0, 2 * np.pi),
        "wall": rng.uniform(12, 24), "epicardial": rng.uniform(0.5, 3),
        "grooves": rng.uniform(6, 14, 2),
        "liver": np.r_[rng.uniform(-0.7, -0.4), rng.uniform(0.25, 0.5), rng.uniform(0.3, 0.5, 2)],
        "coil": np.r_[rng.uniform(50, 110), rng.uniform(0.3, 0.8, 2)],
        "noise": rng.uniform(0.02, 0.06), "psf": rng.uniform(0.8, 1.6),  # sigma, mm
        "vessels": rng.uniform(-1, 1, (int(rng.integers(6, 20)), 2)),
    }


def lvot_slice(patient: int, index: int, label: int, seed: int, size: int
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """One bSSFP-like 4-chamber slice (uint8 ``[size, size]``) and, for label 1, the LVOT
    mask (bool ``[size, size]``: the pixels the outflow tract, lumen and wall, changes)."""
    anat = _patient_anatomy(seed, patient)
    rng = _rng(seed, _SLICE, patient, index)
    lev = anat["levels"]
    pixel = anat["fov"] / size  # mm per pixel
    coords = (np.arange(size, dtype=np.float32) + 0.5) * pixel - anat["fov"] / 2
    x, y = coords[None, :], coords[:, None]
    x, y = np.broadcast_to(x, (size, size)), np.broadcast_to(y, (size, size))
    # this slice: a little translation and rotation, and the cardiac phase
    crux = anat["crux"] + rng.uniform(-3, 3, 2)
    angle = anat["angle"] + np.deg2rad(rng.uniform(-3, 3))
    phase = rng.uniform(0.9, 1.05)
    scale = anat["scale"]
    dx, dy = x - crux[0], y - crux[1]
    a = (dx * np.cos(angle) + dy * np.sin(angle)) / scale  # heart coordinates (mm)
    b = (-dx * np.sin(angle) + dy * np.cos(angle)) / scale
    hp = pixel / scale  # a pixel in heart millimetres

    img = np.zeros((size, size), dtype=np.float32)

    def paint(weight: np.ndarray, level: float | np.ndarray) -> None:
        img[...] = img + (level - img) * weight

    bx, by, brx, bry = anat["body"]
    body_sd = _ellipse_sd(x, y, bx, by, brx, bry)
    paint(_edge(body_sd, pixel), lev["fat"] * (1 + 0.05 * _smooth_field(img.shape, rng, 6)))
    around = np.arctan2((y - by) / bry, (x - bx) / brx) - anat["fat_side"]
    fat = anat["subcutaneous"] * (1 + 0.5 * np.cos(around))
    paint(_edge(body_sd + fat, pixel), lev["muscle"])
    thorax = _edge(body_sd + fat + anat["wall"], pixel)
    paint(thorax, lev["lung"])
    for vx, vy in anat["vessels"]:  # pulmonary vessels in the lungs
        paint(thorax * _edge(np.hypot(x - vx * brx * 0.8, y - vy * bry * 0.7) - 2.5, pixel),
              0.5 * lev["blood"])
    lu, lv, lru, lrv = anat["liver"]  # the right lobe's dome, low on the patient's right
    liver = _ellipse_sd(x, y, bx + lu * brx, by + lv * bry, lru * brx, lrv * bry)
    paint(thorax * _edge(liver, pixel), lev["liver"])
    # spine, paraspinal muscle and the descending aorta at the back of the chest
    sx, sy = anat["spine"]
    paint(_edge(_ellipse_sd(x, y, sx, sy + 10, 55, 35), pixel) * thorax, lev["muscle"])
    paint(_edge(np.hypot(x - sx, y - sy) - 17, pixel), lev["marrow"])
    paint(_edge(np.hypot(x - sx - 28, y - sy + 22) - 12, pixel), 0.85 * lev["blood"])
    # the heart: epicardial fat, myocardium, the four cavities, valves and papillary muscles
    ventricles = _ellipse_sd(a, b, 30, -1, 72, 56)
    ventricles = np.maximum(ventricles, -(a + 6))
    atria = _ellipse_sd(a, b, -28, -1, 30, 55)
    atria = np.maximum(atria, a + 3)
    outer = np.minimum(ventricles, atria)
    grooves = np.minimum(np.hypot(a + 3, b - 55) - anat["grooves"][0],
                         np.hypot(a + 3, b + 57) - anat["grooves"][1])
    paint(_edge(np.minimum(outer - anat["epicardial"], grooves), hp), lev["fat"])
    paint(_edge(np.maximum(outer, -grooves), hp), lev["myo"])
    blood = np.zeros_like(img)
    for ca, cb, ra, rb, side in anat["cavities"].values():
        sd = _ellipse_sd(a, b, ca, cb, ra * phase, rb * phase)
        sd = np.maximum(sd, -(a + 1) if side > 0 else a + 4)
        blood = np.maximum(blood, _edge(sd, hp))
    if rng.random() < 0.6:  # diastole: the mitral and tricuspid valves stand open
        for cb in (24, -25):
            opening = np.maximum(np.abs(b - cb) - 11, np.abs(a + 2.5) - 2.5)
            blood = np.maximum(blood, _edge(opening, hp))
    flow = 1 + 0.06 * _smooth_field(img.shape, rng, 5)
    paint(blood, lev["blood"] * flow)
    paint(_edge(_ellipse_sd(a, b, 40, 38, 7, 4), hp), lev["myo"])  # papillary muscle
    moderator = _capsule_sd(a, b, np.array([45.0, -12.0]), np.array([38.0, -38.0]), 1.2)
    paint(_edge(moderator, hp), lev["myo"])
    img = gaussian_filter(img, anat["psf"] / pixel)

    mask = None
    if label:
        # the outflow tract: a channel of blood from the basal septal LV toward the aortic root
        # between the atria, with a thin wall; it replaces what the slice shows there
        orng = _rng(seed, _OBJECTS, patient, index)
        radius = orng.uniform(8, 12)
        inlet = np.array([orng.uniform(4, 12), orng.uniform(9, 16)])
        root = np.array([orng.uniform(-24, -12), orng.uniform(-4, 8)])
        lumen_sd = np.minimum(_capsule_sd(a, b, inlet, root, radius),
                              np.hypot(a - root[0], b - root[1]) - 1.2 * radius)
        lv = anat["cavities"]["lv"]
        in_lv = _edge(np.maximum(_ellipse_sd(a, b, lv[0], lv[1], lv[2] * phase, lv[3] * phase),
                                 -(a + 1)), hp)
        lumen = _edge(lumen_sd, hp) * (1 - in_lv)
        wall = _edge(lumen_sd - orng.uniform(2.5, 4), hp) * (1 - _edge(lumen_sd, hp)) * (1 - in_lv)
        lumen = np.where(lumen >= 0.3, lumen, 0)
        wall = np.where(wall >= 0.3, wall, 0)
        paint(wall, lev["myo"])
        paint(lumen, lev["blood"] * orng.uniform(0.85, 1.0) * flow)
        mask = (lumen > 0) | (wall > 0)

    # coil sensitivity: anterior and posterior arrays, plus a smooth random component
    reach, front, back = anat["coil"]
    bias = (0.45 + front * np.exp(-np.clip(y - (by - bry), 0, None) / reach)
            + back * np.exp(-np.clip((by + bry) - y, 0, None) / reach))
    bias = bias * (1 + 0.1 * _smooth_field(img.shape, rng, 3))
    sigma = anat["noise"] * lev["blood"]
    noise = rng.standard_normal((2, size, size)).astype(np.float32) * sigma
    signal = img * bias
    magnitude = np.hypot(signal + noise[0], noise[1])  # Rician: |complex Gaussian|
    centre_bias = float(np.median(bias))
    scaled = magnitude / (1.25 * lev["blood"] * centre_bias)
    return np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8), mask


def _positives_per_patient(n_patients: int, n_slices: int, seed: int) -> np.ndarray:
    """Mixed labels per patient (1 .. n_slices-1 positives when n_slices >= 2), balanced
    overall: patients come in pairs whose counts are n/2 + d and n/2 - d."""
    rng = _rng(seed, _LABELS, 1)
    half = n_slices / 2
    spread = max(0, min(int(np.ceil(half)) - 1, 1))
    counts = np.empty(n_patients, dtype=np.int64)
    for p in range(0, n_patients, 2):
        d = int(rng.integers(-spread, spread + 1))
        hi, lo = int(np.ceil(half)) + d, int(np.floor(half)) - d
        counts[p] = hi
        if p + 1 < n_patients:
            counts[p + 1] = lo
    return np.clip(counts, 0, n_slices)


def write_lvot(target: Path | str, n_patients: int, slices_per_patient: int, size: int,
               seed: int = 0, progress: bool = False) -> None:
    """Write LVOT phantoms: ``manifest.csv`` (``patient_id, image, mask, label``) with slices
    ``images/P000/P000_s00.png`` and, for positives, masks ``masks/P000/P000_s00.png``."""
    target = Path(target)
    counts = _positives_per_patient(n_patients, slices_per_patient, seed)
    label_rng = _rng(seed, _LABELS, 2)
    jobs = []
    for p in range(n_patients):
        labels = np.zeros(slices_per_patient, dtype=np.int64)
        labels[: counts[p]] = 1
        jobs += [(p, s, int(lab)) for s, lab in enumerate(label_rng.permutation(labels))]
    rows = []
    for p, s, label in track(jobs, f"generating {len(jobs)} LVOT phantom slices", enabled=progress):
        pid = f"P{p:03d}"
        image = f"images/{pid}/{pid}_s{s:02d}.png"
        img, mask = lvot_slice(p, s, label, seed, size)
        (target / image).parent.mkdir(parents=True, exist_ok=True)
        write_png(target / image, img)
        mask_name = ""
        if mask is not None:
            mask_name = f"masks/{pid}/{pid}_s{s:02d}.png"
            (target / mask_name).parent.mkdir(parents=True, exist_ok=True)
            write_png(target / mask_name, mask.astype(np.uint8) * 255)
        rows.append({"patient_id": pid, "image": image, "mask": mask_name, "label": label})
    pd.DataFrame(rows, columns=["patient_id", "image", "mask", "label"]).to_csv(
        target / MANIFEST, index=False, lineterminator="\n")


# --------------------------------------------------------------------------- contact sheets
_Boxed = list[tuple[np.ndarray, list]]  # (uint8 image [H, W], boxes (x0, y0, x1, y1) inclusive)


def _objectcxr_sheet_items(n: int, seed: int, sizes: tuple[int, int]) -> _Boxed:
    labels = _balanced_labels(n, seed)
    items = []
    for i in range(n):
        img, annotation = objectcxr_image(i, int(labels[i]), seed, *sizes)
        items.append((img, parse_annotation(annotation)))
    return items


def _lvot_sheet_items(n: int, seed: int, sizes: tuple[int, int]) -> _Boxed:
    items = []
    for i in range(n):  # two slices per patient, one of each label
        img, mask = lvot_slice(i // 2, i % 2, (i + i // 2) % 2, seed, sizes[0])
        items.append((img, [] if mask is None else [mask_to_box(mask)]))
    return items


_SHEET_ITEMS = {"objectcxr": _objectcxr_sheet_items, "lvot": _lvot_sheet_items}


def contact_sheet(dataset: str, path: Path | str, n: int = 16, seed: int = 0, tile: int = 224,
                  sizes: tuple[int, int] = (224, 288)) -> Path:
    """Write a square contact sheet of the first ``n`` phantoms of ``dataset`` ("objectcxr" or
    "lvot") as an RGB PNG with the label boxes in red: Object-CXR images drawn at ``sizes``
    (min, max), LVOT slices at ``sizes[0]``, each shown at ``tile`` x ``tile`` pixels."""
    from PIL import Image, ImageDraw

    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    sheet = Image.new("RGB", (cols * tile, rows * tile), (0, 0, 0))
    if dataset not in _SHEET_ITEMS:
        raise XiqaError(f"contact sheet: dataset must be objectcxr or lvot, got {dataset!r}")
    items = _SHEET_ITEMS[dataset](n, seed, sizes)
    for i, (img, boxes) in enumerate(items):
        h, w = img.shape
        picture = Image.fromarray(img).convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(picture)
        for x0, y0, x1, y1 in boxes:
            draw.rectangle([x0 * tile / w, y0 * tile / h, (x1 + 1) * tile / w - 1,
                            (y1 + 1) * tile / h - 1], outline=(255, 40, 40), width=1)
        sheet.paste(picture, ((i % cols) * tile, (i // cols) * tile))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG", optimize=True)
    return path
