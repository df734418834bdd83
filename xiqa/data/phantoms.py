"""Seeded synthetic phantoms written in exactly the real distribution formats (SPEC 2.3).

The same import code reads phantoms and real data, so :func:`write_objectcxr` writes
``train/``, ``dev/`` JPEGs with ``train.csv`` / ``dev.csv`` and :func:`write_lvot` writes a
``manifest.csv`` with PNG slices and PNG masks.

Design, so that a classifier must look inside the box to learn the label:

- Every image's background comes from its own random stream, seeded by ``(seed, index)`` and
  drawn identically whatever the label, so backgrounds carry no information about the label.
  Labels are a seeded balanced permutation; the objects come from a third stream.
- The labelled structure is small (Object-CXR: 5-10 % of the shorter side per object; LVOT:
  8-15 % of the side) and bright (metal at 235-255 over a chest clipped to <= 200; an outflow
  tract at 0.93-1.0 over blood pools at <= 0.68), so it is learnable from scratch at low
  resolution.
- Every MR slice also holds a conspicuous structure that is *not* the label, as real scans do:
  a bright subcutaneous fat rim (0.7-0.8) around the body, so "the brightest rim or edge" is not
  the answer. (A metal-bright laterality marker in every chest was tried and dropped: it made
  the demo-scale models both slower to learn and less specific, without lowering the randomised
  models' Grad-CAM / NormGrad scores, which follow the central receptive-field bias instead.)
- Object-CXR objects lie anywhere inside the lung fields; the heart (and with it the LVOT) is
  small (``HEART_SCALE``) and placed per patient 15-22 % of the side away from the image centre
  in any direction, and the tract jitters by +-6 % of the side around the heart's centre, so a
  fixed central saliency peak (the receptive-field bias of untrained networks) misses most
  tracts: at 128 px about 70 % lie at least tau = 15 px from the centre. (Measured on an H100
  sweep at 96 px: with the heart 6-15 % off centre, fully randomised ResNet-50s scored 0.85-1.00
  with every NormGrad variant, as high as the trained ones.)

Determinism: numpy ``Generator`` streams, fixed JPEG settings (quality 95, no subsampling, no
EXIF) and PNGs without timestamps, so a seed gives the same bytes on the same library versions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from xiqa.data import track
from xiqa.data.images import write_jpeg, write_png
from xiqa.data.lvot import MANIFEST, mask_to_box
from xiqa.data.objectcxr import format_annotation

# Independent random streams per purpose (a stream id is the second seed word).
_LABELS, _CHEST, _OBJECTS, _PATIENT, _SLICE = 1, 2, 3, 4, 5

METAL_MIN = 235.0  # Object-CXR objects: at least this bright (8-bit)
CHEST_MAX = 200.0  # Object-CXR background: never brighter than this
LVOT_MIN, BLOOD_MAX = 0.93, 0.68  # LVOT phantoms, in [0, 1] before 8-bit quantisation
TRACT_MAX = 1.0  # LVOT phantoms: the tract's level is drawn in [LVOT_MIN + 0.03, TRACT_MAX]
FAT_MAX = 0.85  # LVOT phantoms: nothing but the tract is this bright
HEART_OFFSET = (0.3, 0.45)  # LVOT phantoms: distance of the heart from the image centre (u, v units)
HEART_SCALE = (0.55, 0.7)  # LVOT phantoms: heart size relative to the chamber template
TRACT_JITTER = 0.06  # LVOT phantoms: tract position jitter around the heart, fraction of the side
TRACT_EXTENT = (0.08, 0.15)  # LVOT phantoms: tract length, fraction of the side


def _rng(seed: int, stream: int, *index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, *map(int, index)])


def _balanced_labels(n: int, seed: int) -> np.ndarray:
    labels = np.zeros(n, dtype=np.int64)
    labels[: n // 2] = 1
    return _rng(seed, _LABELS).permutation(labels)


def _soft(d: np.ndarray, edge: float) -> np.ndarray:
    """1 inside (d < 1), 0 outside, with a smooth edge of relative width ``edge``."""
    return 0.5 * (1.0 - np.tanh((d - 1.0) / edge))


def _ellipse_d(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    return np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)


# --------------------------------------------------------------------------- Object-CXR
def chest(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple]]:
    """A CXR-like float image in ``[0, CHEST_MAX]`` and its two lung fields as ellipses
    ``(cu, cv, ru, rv)`` in normalised coordinates (u, v in [-1, 1] across the image)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (x + 0.5) / width * 2 - 1 - rng.uniform(-0.04, 0.04)
    v = (y + 0.5) / height * 2 - 1 - rng.uniform(-0.04, 0.04)
    air, tissue, lung_level = rng.uniform(8, 25), rng.uniform(105, 125), rng.uniform(38, 60)
    body = _soft(_ellipse_d(u, v, 0, 0.15, rng.uniform(0.86, 0.96), rng.uniform(1.05, 1.2)), 0.04)
    img = air + (tissue - air) * body
    spread, cv = rng.uniform(0.36, 0.44), rng.uniform(-0.12, -0.02)
    lungs = [(-spread, cv, rng.uniform(0.25, 0.31), rng.uniform(0.52, 0.64)),
             (spread, cv, rng.uniform(0.25, 0.31), rng.uniform(0.52, 0.64))]
    lung = np.maximum(*[_soft(_ellipse_d(u, v, *e), 0.05) for e in lungs])
    heart = _soft(_ellipse_d(u, v, rng.uniform(0.08, 0.16), rng.uniform(0.3, 0.4),
                             rng.uniform(0.24, 0.3), rng.uniform(0.2, 0.26)), 0.06)
    lung = lung * (1 - heart)
    img = img + (lung_level - img) * lung + 25 * heart * (1 - lung)
    # ribs: faint arcs curving down laterally, on both sides
    ribs = np.zeros_like(img)
    for k in range(9):
        vk = -0.75 + 0.15 * k + rng.uniform(-0.02, 0.02)
        curve = vk - 0.25 * np.abs(u) + rng.uniform(0.7, 0.9) * u ** 2
        ribs = np.maximum(ribs, _soft(np.abs(v - curve) / 0.028, 0.25) * (np.abs(u) > 0.08))
    img = img + rng.uniform(12, 20) * ribs * body
    # spine and mediastinum: a bright band with vertebrae
    spine_w = rng.uniform(0.06, 0.08)
    spine = _soft(np.abs(u) / spine_w, 0.15) * body
    vertebrae = 1 + 0.08 * np.cos(2 * np.pi * v / rng.uniform(0.1, 0.13))
    img = img + (rng.uniform(165, 185) * vertebrae - img) * spine
    side = min(height, width)
    img = img + gaussian_filter(rng.standard_normal(img.shape).astype(np.float32), 0.03 * side) * 60
    img = img + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, CHEST_MAX), lungs


def _inside_lung(u: float, v: float, lungs: list[tuple], margin: float) -> bool:
    return any(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= (1 - margin) ** 2
               for cu, cv, ru, rv in lungs)


def foreign_objects(height: int, width: int, lungs: list[tuple], rng: np.random.Generator
                    ) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """1-3 metal objects (coin = type 1 ellipse, clip = type 0 rectangle, irregular shape =
    type 2 polygon), each 5-10 % of the shorter side, centred in a lung field, not overlapping.
    Returns their union as a boolean mask and the annotation objects ``(type, coords)``."""
    from PIL import Image, ImageDraw

    side = min(height, width)
    y, x = np.mgrid[0:height, 0:width]
    union = np.zeros((height, width), dtype=bool)
    objects: list[tuple[int, list[float]]] = []
    taken: list[tuple[int, int, int, int]] = []
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    for _ in range(n):
        kind = int(rng.integers(0, 3))
        extent = rng.uniform(0.05, 0.10) * side
        for _attempt in range(100):
            cu, cv = rng.uniform(-1, 1), rng.uniform(-1, 1)
            if _inside_lung(cu, cv, lungs, margin=0.15):
                break
        cx, cy = (cu + 1) / 2 * width, (cv + 1) / 2 * height
        if kind == 1:  # coin, possibly seen slightly obliquely
            rx = extent / 2
            ry = rx * rng.uniform(0.8, 1.0)
            if rng.random() < 0.5:
                rx, ry = ry, rx
            mask = ((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2 <= 1
        elif kind == 0:  # clip: an axis-aligned bar
            a, b = extent, extent * rng.uniform(0.35, 0.7)
            if rng.random() < 0.5:
                a, b = b, a
            mask = (np.abs(x + 0.5 - cx) <= a / 2) & (np.abs(y + 0.5 - cy) <= b / 2)
        else:  # irregular shape: a star-like polygon
            k = int(rng.integers(5, 9))
            angles = 2 * np.pi * (np.arange(k) + rng.uniform(-0.3, 0.3, k)) / k + rng.uniform(0, 2 * np.pi)
            radii = rng.uniform(0.6, 1.0, k) * extent / 2
            pts = np.round(np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1))
            pts = np.clip(pts, 0, [width - 1, height - 1]).astype(int)
            canvas = Image.new("L", (width, height), 0)
            ImageDraw.Draw(canvas).polygon([tuple(p) for p in pts.tolist()], fill=1, outline=1)
            mask = np.asarray(canvas, dtype=bool)
        box = mask_to_box(mask)
        if box is None:
            continue
        if any(box[0] <= t[2] + 2 and t[0] <= box[2] + 2 and box[1] <= t[3] + 2 and t[1] <= box[3] + 2
               for t in taken):
            continue  # keep objects apart so every box holds one object
        taken.append(box)
        union |= mask
        if kind == 2:
            objects.append((2, pts.reshape(-1).astype(float).tolist()))
        else:
            objects.append((kind, [float(c) for c in box]))
    if not objects:  # all candidates collided: cannot happen with one object, kept as a guard
        raise RuntimeError("phantom generation placed no object")
    return union, objects


def objectcxr_image(index: int, label: int, seed: int, min_size: int, max_size: int
                    ) -> tuple[np.ndarray, str]:
    """One Object-CXR phantom: uint8 ``[H, W]`` and its ``annotation`` cell ("" if label 0)."""
    rng = _rng(seed, _CHEST, index)
    height, width = (int(s) for s in rng.integers(min_size, max_size + 1, size=2))
    img, lungs = chest(height, width, rng)
    annotation = ""
    if label:
        orng = _rng(seed, _OBJECTS, index)
        mask, objects = foreign_objects(height, width, lungs, orng)
        metal = orng.uniform(METAL_MIN + 5, 252) + orng.normal(0, 2, img.shape)
        img = np.where(mask, np.clip(metal, METAL_MIN, 255), img)
        annotation = format_annotation(objects)
    return np.round(img).astype(np.uint8), annotation


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
# Chambers in heart coordinates (a along the long axis, base -> apex; b across the septum):
# centre a, centre b, radius a, radius b.
_CHAMBERS = {"lv": (0.27, 0.13, 0.25, 0.11), "rv": (0.24, -0.14, 0.22, 0.1),
             "la": (-0.18, 0.13, 0.13, 0.105), "ra": (-0.18, -0.14, 0.13, 0.105)}


def _polar(rng: np.random.Generator, r_min: float, r_max: float) -> np.ndarray:
    """A 2-D offset of length in [r_min, r_max] in a uniformly random direction."""
    r, phi = rng.uniform(r_min, r_max), rng.uniform(0, 2 * np.pi)
    return np.array([r * np.cos(phi), r * np.sin(phi)])


def _patient_anatomy(seed: int, patient: int) -> dict:
    rng = _rng(seed, _PATIENT, patient)
    return {
        # the heart sits off the image centre (radius HEART_OFFSET in normalised units, any
        # direction), as 4-chamber views often do, so a centre-biased map does not hit the LVOT
        "centre": _polar(rng, *HEART_OFFSET), "angle": rng.uniform(-0.9, -0.5),
        "scale": rng.uniform(*HEART_SCALE),
        "chambers": {k: np.array(c) * np.r_[1, 1, rng.uniform(0.85, 1.15, 2)]
                     for k, c in _CHAMBERS.items()},
        "blood": rng.uniform(0.55, BLOOD_MAX), "myo": rng.uniform(0.22, 0.32),
        "tissue": rng.uniform(0.3, 0.4), "lung": rng.uniform(0.04, 0.1),
        "body": rng.uniform(0.85, 0.95, 2), "fat": rng.uniform(0.7, 0.8),
    }


def lvot_slice(patient: int, index: int, label: int, seed: int, size: int
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """One 4-chamber slice (uint8 ``[size, size]``) and, for label 1, the LVOT mask (bool)."""
    anat = _patient_anatomy(seed, patient)
    rng = _rng(seed, _SLICE, patient, index)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    u, v = (x + 0.5) / size * 2 - 1, (y + 0.5) / size * 2 - 1
    shift = anat["centre"] + rng.uniform(-0.02, 0.02, 2)
    angle = anat["angle"] + rng.uniform(-0.05, 0.05)
    scale = anat["scale"] * rng.uniform(0.95, 1.05)  # cardiac phase
    du, dv = u - shift[0], v - shift[1]
    a = (du * np.cos(angle) + dv * np.sin(angle)) / scale
    b = (-du * np.sin(angle) + dv * np.cos(angle)) / scale
    d_body = _ellipse_d(u, v, 0, 0.05, *anat["body"])
    body = _soft(d_body, 0.03)
    img = 0.02 + (anat["tissue"] - 0.02) * body
    fat = _soft(np.abs(d_body - 0.955) / 0.035, 0.3)  # bright subcutaneous fat under the skin
    img = img + (anat["fat"] - img) * fat
    lungs = np.maximum(_soft(_ellipse_d(u, v, -0.5, -0.15, 0.32, 0.45), 0.08),
                       _soft(_ellipse_d(u, v, 0.5, -0.15, 0.32, 0.45), 0.08))
    img = img + (anat["lung"] - img) * lungs * body
    heart = _soft(_ellipse_d(a, b, 0.05, 0.0, 0.52, 0.34), 0.03)
    img = img + (anat["myo"] - img) * heart
    blood = np.zeros_like(img)
    for ca, cb, ra, rb in anat["chambers"].values():
        blood = np.maximum(blood, _soft(_ellipse_d(a, b, ca, cb, ra, rb), 0.04))
    img = img + (anat["blood"] - img) * blood
    # blur and noise are drawn before and regardless of the label, so a positive differs
    # from its negative twin only on the mask's pixels
    img = gaussian_filter(img, 0.5)
    noise = rng.normal(0, 0.02, img.shape)
    mask = None
    if label:
        # the outflow tract: a bright capsule near the crux, jittered by +-TRACT_JITTER of the side
        orng = _rng(seed, _OBJECTS, patient, index)
        extent = orng.uniform(*TRACT_EXTENT) * size
        width = max(3.0, extent * orng.uniform(0.35, 0.5))
        cx = size / 2 + shift[0] * size / 2 + orng.uniform(-TRACT_JITTER, TRACT_JITTER) * size
        cy = size / 2 + shift[1] * size / 2 + orng.uniform(-TRACT_JITTER, TRACT_JITTER) * size
        theta = angle + np.pi + orng.uniform(-0.5, 0.5)
        half = (extent - width) / 2
        ex, ey = half * np.cos(theta), half * np.sin(theta)
        px, py = x + 0.5 - cx, y + 0.5 - cy
        t = np.clip((px * ex + py * ey) / max(ex * ex + ey * ey, 1e-9), -1, 1)
        mask = (px - t * ex) ** 2 + (py - t * ey) ** 2 <= (width / 2) ** 2
        img = np.where(mask, orng.uniform(LVOT_MIN + 0.03, TRACT_MAX), img)
    img = np.minimum(img + noise, FAT_MAX)  # noise never lifts the fat or blood to the tract
    if mask is not None:  # keep the tract the brightest structure despite the noise
        img = np.where(mask, np.maximum(img, LVOT_MIN), img)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), mask


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
