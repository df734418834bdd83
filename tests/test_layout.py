"""docs/DESIGN.md's module map (its "Layout" block) names every module under xiqa/ and pipelines/,
and nothing that is not there.

An entry starts at the line's first column: ``xiqa/cli.py`` names one module; ``xiqa/report/``
names a package, and the ``*.py`` names in its text (continuation lines included) are the modules
directly inside it. ``__init__.py`` files need not be named.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("xiqa", "pipelines")


def map_entries(design: str) -> dict[str, str]:
    """``{entry path: its text}`` of the first fenced block after ``## Layout``."""
    block = design.split("## Layout", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    current = None
    for line in block.splitlines()[1:]:
        if line and not line[0].isspace():
            current, _, text = line.partition(" ")
            entries[current] = text
        elif current is not None:
            entries[current] += " " + line.strip()
    return entries


def named_modules(entries: dict[str, str]) -> set[str]:
    """The module paths the map names under the project's packages."""
    names = set()
    for path, text in entries.items():
        if path.split("/", 1)[0] not in PACKAGES:
            continue
        if path.endswith(".py"):
            names.add(path)
        else:
            names.update(path + name for name in re.findall(r"(?<![\w./])(\w+\.py)\b", text))
    return names


def tree_modules(root: Path = ROOT) -> set[str]:
    """Every module file under the project's packages, ``__init__.py`` aside."""
    return {p.relative_to(root).as_posix() for pkg in PACKAGES for p in (root / pkg).rglob("*.py")
            if p.name != "__init__.py" and "__pycache__" not in p.parts}


def test_the_design_map_names_every_module_and_only_modules_that_exist() -> None:
    entries = map_entries((ROOT / "docs" / "DESIGN.md").read_text())
    named, present = named_modules(entries), tree_modules()
    assert not sorted(present - named), "modules missing from docs/DESIGN.md's layout"
    assert not sorted(named - present), "docs/DESIGN.md's layout names modules that do not exist"
    for path in entries:  # a package entry names a folder that exists
        if path.split("/", 1)[0] in PACKAGES and path.endswith("/"):
            assert (ROOT / path).is_dir(), path


def test_the_check_reads_a_package_entry_with_its_continuation_lines(tmp_path: Path) -> None:
    design = ("## Layout\n```\nxiqa/cli.py   the app\nxiqa/report/  table.py (cells),\n"
              "              render.py; see pipelines/x.py\ndeploy/       a.sh\n```\n")
    entries = map_entries(design)
    assert set(entries) == {"xiqa/cli.py", "xiqa/report/", "deploy/"}
    assert named_modules(entries) == {"xiqa/cli.py", "xiqa/report/table.py", "xiqa/report/render.py"}
    (tmp_path / "xiqa" / "report").mkdir(parents=True)
    (tmp_path / "pipelines").mkdir()
    for name in ("xiqa/cli.py", "xiqa/report/__init__.py", "xiqa/report/table.py", "xiqa/report/gone.py"):
        (tmp_path / name).write_text("")
    assert tree_modules(tmp_path) - named_modules(entries) == {"xiqa/report/gone.py"}
    assert named_modules(entries) - tree_modules(tmp_path) == {"xiqa/report/render.py"}
