"""Write the README's demo results from two runs of scripts/demo_run.sh (never typed by hand).

    python scripts/readme_results.py RUN_A_DIR RUN_B_DIR

copies both runs' tables and meta.json into docs/demo-results/run-a and run-b, then replaces the
marked section of README.md with what xiqa.report.readme renders from them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xiqa.io import write_text
from xiqa.report import readme

ROOT = Path(__file__).resolve().parent.parent


def main(a: Path, b: Path) -> None:
    metas = tuple(json.loads((p / "meta.json").read_text()) for p in (a, b))
    target = ROOT / "docs" / "demo-results"
    readme.collect((a / "reports", b / "reports"), metas, target)  # type: ignore[arg-type]
    text = (ROOT / "README.md").read_text()
    write_text(ROOT / "README.md", readme.replace_section(text, readme.render_section(target)))
    print(f"README.md: demo results from {a} and {b}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
