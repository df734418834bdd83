"""Read one scan as a 2-D grayscale array, whatever its file format.

PNG/JPEG (Pillow), NPY (NumPy, ``allow_pickle=False``) and DICOM (pydicom, rescale slope and
intercept applied). Returns float32 ``[H, W]`` in the file's own intensity units for NPY/DICOM
and in ``[0, 255]`` for PNG/JPEG; :func:`to_unit_range` maps any of them to ``[0, 1]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xiqa.errors import XiqaError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy", ".dcm", ".dicom")


def read_image(path: Path | str) -> np.ndarray:
    """Decode ``path`` to float32 ``[H, W]``; an unreadable file raises :class:`XiqaError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise XiqaError(f"{path}: image file not found")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".dcm", ".dicom"):
            arr = _read_dicom(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                img.load()
                arr = np.asarray(img.convert("L"))
    except XiqaError:
        raise
    except Exception as err:  # any decoder failure is the file's fault, not ours
        raise XiqaError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2:
        raise XiqaError(f"{path}: expected a 2-D grayscale image, got shape {tuple(arr.shape)}")
    return arr.astype(np.float32, copy=False)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float32)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    arr = arr * slope + intercept
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        arr = arr.max() - arr
    return arr


def to_unit_range(arr: np.ndarray) -> np.ndarray:
    """Min-max scale to float32 ``[0, 1]`` (a constant image becomes all zeros)."""
    arr = arr.astype(np.float32, copy=False)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr)
    return (arr - lo) / (hi - lo)


def image_size(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` of an image file, decoding it fully (so a corrupt file is caught)."""
    arr = read_image(path)
    return int(arr.shape[1]), int(arr.shape[0])
