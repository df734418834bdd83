"""The LVOT phantoms (bSSFP cine, 4-chamber view), drawn in millimetres on a 320-400 mm field of
view: one slice and its mask, the patients' mixed labels, the manifest folder.

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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from xiqa.data import track
from xiqa.data.images import write_png
from xiqa.data.lvot import MANIFEST
from xiqa.data.phantoms.fields import LABELS, OBJECTS, PATIENT, SLICE, seeded_rng, smooth_field

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
    rng = seeded_rng(seed, PATIENT, patient)
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
    rng = seeded_rng(seed, SLICE, patient, index)
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
    paint(_edge(body_sd, pixel), lev["fat"] * (1 + 0.05 * smooth_field(img.shape, rng, 6)))
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
    flow = 1 + 0.06 * smooth_field(img.shape, rng, 5)
    paint(blood, lev["blood"] * flow)
    paint(_edge(_ellipse_sd(a, b, 40, 38, 7, 4), hp), lev["myo"])  # papillary muscle
    moderator = _capsule_sd(a, b, np.array([45.0, -12.0]), np.array([38.0, -38.0]), 1.2)
    paint(_edge(moderator, hp), lev["myo"])
    img = gaussian_filter(img, anat["psf"] / pixel)

    mask = None
    if label:
        # the outflow tract: a channel of blood from the basal septal LV toward the aortic root
        # between the atria, with a thin wall; it replaces what the slice shows there
        orng = seeded_rng(seed, OBJECTS, patient, index)
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
    bias = bias * (1 + 0.1 * smooth_field(img.shape, rng, 3))
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
    rng = seeded_rng(seed, LABELS, 1)
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
    label_rng = seeded_rng(seed, LABELS, 2)
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

