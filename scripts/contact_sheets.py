"""Write contact sheets of the embedded phantoms (16 per dataset, label boxes in red):
``docs/phantoms-objectcxr.png`` and ``docs/phantoms-lvot.png``.

    python scripts/contact_sheets.py --out docs
"""

from __future__ import annotations

from pathlib import Path

import typer

from xiqa.data.phantoms import contact_sheet


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
