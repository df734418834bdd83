"""The Object-CXR phantoms (chest radiographs with foreign objects): the chest "patient", one
image, the distributed folder. The objects themselves are :mod:`~xiqa.data.phantoms.chest_objects`.

- Anatomy is a real chest CR, pydicom-data's ``RG1_UNCR.dcm`` (MONOCHROME1, inverted so that
  attenuation is bright), decoded once per process and reduced by block means to a working
  resolution for the requested size. Each image is a different "patient": the radiograph is
  cropped and scaled (the output covers 70-100 % of it), flipped (p = 0.5), rotated (+-6 deg),
  stretched (+-10 % per axis), elastically warped (a smooth displacement of 1-2.5 % of its side),
  unsharp-masked (vendor processing of random strength), given a smooth exposure gradient and a
  detector blur, shown through a random window and gamma, collimated on 0-4 sides and given
  quantum noise. Ribs, clavicles, spine, heart borders, diaphragm and collimation edges are
  therefore the real ones, moved and re-exposed.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from xiqa.data import track
from xiqa.data.images import write_jpeg
from xiqa.data.objectcxr import format_annotation
from xiqa.data.phantoms.chest_objects import distractors, foreign_objects
from xiqa.data.phantoms.fields import CHEST, DISTRACT, OBJECTS, balanced_labels, seeded_rng, smooth_field
from xiqa.errors import XiqaError

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


class Patient:
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
        px = px + amp * smooth_field((height, width), rng, 4)
        py = py + amp * smooth_field((height, width), rng, 4)
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
        att = att + rng.uniform(0.01, 0.05) * smooth_field((height, width), rng, 3)
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


def objectcxr_image(index: int, label: int, seed: int, min_size: int, max_size: int
                    ) -> tuple[np.ndarray, str]:
    """One Object-CXR phantom: uint8 ``[H, W]`` and its ``annotation`` cell ("" if label 0)."""
    rng = seeded_rng(seed, CHEST, index)
    height, width = (int(s) for s in rng.integers(min_size, max_size + 1, size=2))
    patient = Patient(height, width, max_size, rng)
    marker, text = distractors(patient, seeded_rng(seed, DISTRACT, index))
    attenuation = patient.attenuation + marker
    annotation = ""
    if label:
        added, objects = foreign_objects(patient, seeded_rng(seed, OBJECTS, index))
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
    labels = balanced_labels(n_images, seed)
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
