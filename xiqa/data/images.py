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


def image_shape(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` read from the file header only (no pixel decoding): for files that an
    import has already validated with :func:`read_image`."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            shape = arr.shape[:2]
        elif suffix in (".dcm", ".dicom"):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            shape = (int(ds.Rows), int(ds.Columns))
        else:
            from PIL import Image

            with Image.open(path) as img:
                shape = (img.height, img.width)
    except FileNotFoundError:
        raise XiqaError(f"{path}: image file not found") from None
    except Exception as err:
        raise XiqaError(f"{path}: cannot read image header ({type(err).__name__}: {err})") from None
    return int(shape[1]), int(shape[0])


def member_path(folder: Path, name: str, where: str) -> Path:
    """``folder / name`` for a file name taken from a CSV, refusing names that leave ``folder``
    (absolute paths, ``..``, links pointing outside). ``where`` names the CSV row for errors."""
    text = str(name).strip()
    parts = text.replace("\\", "/").split("/")
    if not text or text.startswith(("/", "\\")) or ".." in parts or (len(text) > 1 and text[1] == ":"):
        raise XiqaError(f"{where}: file name {text!r} escapes the folder {folder}")
    path = folder / text.replace("\\", "/")
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        raise XiqaError(f"{where}: file name {text!r} points outside the folder {folder}") from None
    return path


def write_png(path: Path, arr: np.ndarray) -> None:
    """Write a uint8 ``[H, W]`` array as an 8-bit grayscale PNG (no timestamp or text chunks, so
    the bytes depend only on the pixels)."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(
        path, format="PNG", optimize=False, compress_level=6)


def write_jpeg(path: Path, arr: np.ndarray, quality: int = 95) -> None:
    """Write a uint8 ``[H, W]`` array as a baseline grayscale JPEG with fixed quality, no
    subsampling and no EXIF, so the bytes depend only on the pixels."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(
        path, format="JPEG", quality=quality, subsampling=0, optimize=False, progressive=False)
