"""Read one scan as a 2-D grayscale array, whatever its file format.

PNG/JPEG (Pillow), NPY (NumPy, ``allow_pickle=False``) and DICOM (pydicom, rescale slope and
intercept applied). :func:`read_image` returns float32 ``[H, W]`` in the file's own units
(``[0, 255]`` for 8-bit PNG/JPEG). :func:`read_scan` maps a scan to ``[0, 1]`` with a window
that does not depend on what the image shows, so that a small bright object cannot change the
brightness of the rest of the scan (per-image min-max scaling would: a classifier could then
read the label off the background):

- 8-bit PNG/JPEG: ``v / 255``;
- DICOM with a VOI window (``WindowCenter`` / ``WindowWidth``): that window, as a viewer shows it;
- anything else (16-bit PNG, NPY, DICOM without a window): the 0.5th-99.5th percentile window
  of the image, which a structure covering under 0.5 % of the pixels barely moves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xiqa.errors import XiqaError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy", ".dcm", ".dicom")
PERCENTILE_WINDOW = (0.5, 99.5)
_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr")


def read_image(path: Path | str) -> np.ndarray:
    """Decode ``path`` to float32 ``[H, W]`` in its own units; an unreadable file raises
    :class:`XiqaError`."""
    return _decode(path)[0]


def read_scan(path: Path | str) -> np.ndarray:
    """Decode ``path`` to float32 ``[H, W]`` in ``[0, 1]`` through its fixed window (module doc)."""
    arr, window = _decode(path)
    if window is None:
        lo, hi = (float(v) for v in np.percentile(arr, PERCENTILE_WINDOW))
        if hi <= lo:
            lo, hi = float(arr.min()), float(arr.max())
        window = (lo, hi)
    lo, hi = window
    if hi <= lo:  # a constant image
        return np.zeros_like(arr)
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0, dtype=np.float32)


def _decode(path: Path | str) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The float32 ``[H, W]`` pixels and the file's fixed window (None: the image has none)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise XiqaError(f"{path}: image file not found")
    window = None
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".dcm", ".dicom"):
            arr, window = _read_dicom(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                img.load()
                if img.mode in _EIGHT_BIT_MODES:
                    arr, window = np.asarray(img.convert("L")), (0.0, 255.0)
                else:  # 16-bit or float PNG/TIFF-like modes: keep every bit
                    arr = np.asarray(img)
    except XiqaError:
        raise
    except Exception as err:  # any decoder failure is the file's fault, not ours
        raise XiqaError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2:
        raise XiqaError(f"{path}: expected a 2-D grayscale image, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise XiqaError(f"{path}: the image is empty ({arr.shape[1]}x{arr.shape[0]} pixels)")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise XiqaError(f"{path}: expected real-valued pixels, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise XiqaError(f"{path}: the image holds non-finite values (NaN or inf)")
    return arr, window


def _read_dicom(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    import pydicom
    from pydicom.multival import MultiValue

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float32)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    arr = arr * slope + intercept
    window = None
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is not None and width is not None:
        def first(v: Any) -> float:  # a DICOM value may hold several windows: take the first
            return float(v[0] if isinstance(v, MultiValue) else v)

        c, w = first(center), first(width)
        if w > 0:
            window = (c - w / 2.0, c + w / 2.0)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":  # white = low values
        top = float(arr.max())
        arr = top - arr
        if window is not None:
            window = (top - window[1], top - window[0])
    return arr, window


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


def write_dicom(path: Path, arr: np.ndarray, *, window: tuple[float, float] | None = None,
                photometric: str = "MONOCHROME2") -> None:
    """Write a ``[H, W]`` array (values in 0..65535) as an uncompressed 16-bit MR DICOM, with a
    VOI window ``(center, width)`` when given."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
    ds.PixelData = np.ascontiguousarray(arr, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
