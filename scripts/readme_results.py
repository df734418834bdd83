"""Write the generated parts of the docs (never typed by hand).

    python scripts/readme_results.py RUN_A_DIR RUN_B_DIR   # two runs of scripts/demo_run.sh
    python scripts/readme_results.py                       # again, from the committed runs alone

With two run folders it first copies both runs' tables, overlay figures and meta.json into
docs/demo-results/run-a and run-b, and run A's overlay into docs/overlay.png (the README's
picture). Then, from docs/demo-results alone, it rewrites the marked sections of README.md and
docs/demo-results/README.md (xiqa.report.readme), and docs/OUTPUTS.md from xiqa/schema.py
(xiqa.report.outputs). tests/report/test_readme.py fails when a committed file differs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from xiqa.errors import XiqaError
from xiqa.io import atomic_path, write_text
from xiqa.report import outputs, readme

ROOT = Path(__file__).resolve().parent.parent


def collect(a: Path, b: Path) -> None:
    """Copy the two runs into docs/demo-results and run A's overlay into docs/overlay.png."""
    figure = readme.overlay_source(a / "reports")  # before anything is copied: one clear error
    metas = tuple(json.loads((p / "meta.json").read_text()) for p in (a, b))
    readme.collect((a / "reports", b / "reports"), metas, ROOT / "docs" / "demo-results")  # type: ignore[arg-type]
    with atomic_path(ROOT / readme.FIGURE) as tmp:
        shutil.copyfile(figure, tmp)
    print(f"docs/demo-results: runs {a} and {b}; {readme.FIGURE}: {figure}")


def main(args: list[str]) -> None:
    """Collect two runs when given, then render every generated doc."""
    if len(args) not in (0, 2):
        raise SystemExit(__doc__)
    if args:
        collect(Path(args[0]), Path(args[1]))
    for path, text in readme.rendered(ROOT).items():
        write_text(path, text)
        print(f"{path.relative_to(ROOT)}: rendered from docs/demo-results")
    write_text(ROOT / outputs.PATH, outputs.render())
    print(f"{outputs.PATH}: rendered from xiqa/schema.py")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except XiqaError as err:
        raise SystemExit(f"error: {err}") from None
