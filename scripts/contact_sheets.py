"""Write contact sheets of the embedded phantoms (16 per dataset, label boxes in red):
``docs/phantoms-objectcxr.png`` and ``docs/phantoms-lvot.png``.

    python scripts/contact_sheets.py --out docs
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from xiqa.data.lvot import mask_to_box
from xiqa.data.objectcxr import parse_annotation
from xiqa.data.phantoms import lvot_slice, objectcxr_image
from xiqa.data.phantoms.fields import balanced_labels
from xiqa.errors import XiqaError

_Boxed = list[tuple[np.ndarray, list]]  # (uint8 image [H, W], boxes (x0, y0, x1, y1) inclusive)


def _objectcxr_sheet_items(n: int, seed: int, sizes: tuple[int, int]) -> _Boxed:
    labels = balanced_labels(n, seed)
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


def main(out: Path = typer.Option(Path("docs"), help="folder for the PNGs"),
         seed: int = typer.Option(0, help="phantom seed"),
         n: int = typer.Option(16, help="phantoms per sheet")) -> None:
    """Draw the first N phantoms of each dataset at demo sizes (Object-CXR 224-288 px, LVOT
    128 px) with their boxes."""
    for dataset, sizes in (("objectcxr", (224, 288)), ("lvot", (128, 128))):
        path = contact_sheet(dataset, out / f"phantoms-{dataset}.png", n=n, seed=seed, sizes=sizes)
        typer.echo(f"{path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    typer.run(main)
