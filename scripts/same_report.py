"""Does a change keep the study's numbers? Run the tiny grid of tests/test_grid.py (Object-CXR,
ResNet-34 and EfficientNet-B0, seeds 1 and 2, FR, one epoch at 32 px) with ``dvc repro`` at two
commits, each in its own fresh clone sharing this checkout's .venv, and compare their reports:
every Markdown table byte for byte, and every CSV cell (full precision) by position, so that a
change of the CSV's column names alone does not count as a change of numbers.

    usage: .venv/bin/python scripts/same_report.py BEFORE AFTER OUT_DIR

Prints one line per table and exits 1 if any number differs. OUT_DIR keeps both clones (with their
reports) and logs; a commit whose clone there has its reports is not built again.
"""

from __future__ import annotations

import csv
import difflib
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from tests.conftest import deep_merge  # noqa: E402  (the tests' own merge of params)
from tests.test_grid import TINY  # noqa: E402  (the tiny grid, one definition)


def build(commit: str, out: Path) -> Path:
    """``dvc repro`` of the tiny grid at ``commit``; returns the folder its reports were copied to."""
    work = out / f"clone-{commit}"
    if (work / "reports").is_dir():  # built by an earlier call with the same OUT_DIR
        return work / "reports"
    subprocess.run(["git", "clone", "-q", str(HERE), str(work)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=work, check=True)
    params = yaml.safe_load((work / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, TINY), sort_keys=False))
    (work / ".venv").symlink_to(HERE / ".venv")
    env = {"PATH": f"{HERE / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(Path.home())}
    start = time.monotonic()
    with open(out / f"{commit}.log", "w") as log:
        subprocess.run(["dvc", "repro"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"{commit}: dvc repro of the tiny grid in {time.monotonic() - start:.0f} s", flush=True)
    return work / "reports"


def _cells(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]  # values only: the header is a name, not a number


def compare(a: Path, b: Path) -> bool:
    """Print what differs between two report folders; True when every number is the same."""
    same = True
    stems = sorted({p.stem for p in a.glob("table*.md")} | {p.stem for p in b.glob("table*.md")})
    for stem in stems:
        md = (a / f"{stem}.md").read_bytes() == (b / f"{stem}.md").read_bytes()
        ca, cb = _cells(a / f"{stem}.csv"), _cells(b / f"{stem}.csv")
        # the 'after' CSV may lead with an id column the 'before' one lacked: align from the right
        width = min(len(ca[0]), len(cb[0])) if ca and cb else 0
        values = len(ca) == len(cb) and all(ra[-width:] == rb[-width:] for ra, rb in zip(ca, cb, strict=True))
        cells = sum(len(r[-width:]) for r in ca)
        print(f"{stem}: markdown {'identical' if md else 'DIFFERS'}, "
              f"{cells} CSV cells {'identical' if values else 'DIFFER'}")
        if not md:  # show what: a number, or only words
            lines = difflib.unified_diff((a / f"{stem}.md").read_text().splitlines(),
                                         (b / f"{stem}.md").read_text().splitlines(), lineterm="", n=0)
            print("\n".join(f"    {line}" for line in list(lines)[2:12]))
        same &= md and values
    return same


def main() -> int:
    """Build both commits' reports and compare them."""
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    before, after, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ra, rb = build(before, out), build(after, out)
    return 0 if compare(ra, rb) else 1


if __name__ == "__main__":
    raise SystemExit(main())
