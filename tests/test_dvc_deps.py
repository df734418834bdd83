"""A DVC stage's ``deps`` cover exactly the project files it runs: every one of them, and no other.

A file the stage runs but its deps miss would not rerun it when edited, and ``dvc repro`` could
call stale results up to date; a folder dep that also covers files the stage never imports
reruns it for nothing (editing the contact sheets must not retrain every model). The imports
are walked statically (``ast``), lazy imports inside functions included, starting at the module
of the stage's ``cmd`` (``python -m pipelines.<stage>``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("xiqa", "pipelines")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The project file of a dotted module name (a package's ``__init__.py``), or None."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported(path: Path, root: Path) -> set[str]:
    """Dotted names a file imports, each with its parent packages (which Python runs first)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # from pkg import submodule
    with_parents = set()
    for name in names:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return with_parents


def reached_files(module: str, root: Path = ROOT) -> set[Path]:
    """Every project file that running ``python -m <module>`` can import."""
    start = module_file(module, root)
    if start is None:
        raise ValueError(f"{module}: not a project module")
    seen: set[Path] = set()
    parts = module.split(".")  # `python -m a.b.c` imports the packages a and a.b first
    todo = [start] + [f for i in range(1, len(parts)) if (f := module_file(".".join(parts[:i]), root))]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported(path, root):
            found = module_file(name, root)
            if found is not None and found not in seen:
                todo.append(found)
    return seen


def stages(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, tuple[str, list[str]]]:
    """``{stage: (module of its cmd, deps)}`` for every stage of ``dvc.yaml``."""
    spec = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, stage in spec.items():
        body = stage.get("do", stage)
        match = re.search(r"python -m ([\w.]+)", body["cmd"])
        if match is None:
            continue
        out[name] = (match.group(1), [str(d) for d in body.get("deps", [])])
    return out


def uncovered(files: set[Path], deps: list[str], root: Path = ROOT) -> list[str]:
    covered = [root / d for d in deps if "${" not in d]
    rel = []
    for f in sorted(files):
        if not any(f == c or c in f.parents for c in covered):
            rel.append(str(f.relative_to(root)))
    return rel


def too_wide(files: set[Path], deps: list[str], root: Path = ROOT) -> list[str]:
    """The project-code deps (under ``xiqa/`` or ``pipelines/``) that cover a Python file not in
    ``files``, each with the files it covers for nothing."""
    wide = []
    for dep in deps:
        path = root / dep
        if "${" in dep or Path(dep).parts[0] not in PACKAGES:
            continue
        covered = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        extra = [str(f.relative_to(root)) for f in covered if f not in files]
        if extra and path.is_dir():
            wide.append(f"{dep} (never imports {', '.join(extra)})")
        elif extra:
            wide.append(f"{dep} (never imported)")
    return wide


@pytest.mark.parametrize("stage", sorted(stages()))
def test_every_file_a_stage_runs_is_one_of_its_dvc_deps(stage: str) -> None:
    module, deps = stages()[stage]
    missing = uncovered(reached_files(module), deps)
    assert not missing, f"dvc.yaml: stage {stage!r} runs {missing} but does not list them in deps"


@pytest.mark.parametrize("stage", sorted(stages()))
def test_no_dvc_dep_of_a_stage_covers_a_file_it_never_imports(stage: str) -> None:
    module, deps = stages()[stage]
    wide = too_wide(reached_files(module), deps)
    assert not wide, f"dvc.yaml: stage {stage!r} lists deps wider than what it runs: {'; '.join(wide)}"


def test_the_walk_finds_lazy_relative_and_package_imports(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "xiqa" / "sub").mkdir(parents=True)
    for f in ("pipelines/__init__.py", "xiqa/__init__.py", "xiqa/sub/__init__.py", "xiqa/unused.py"):
        (tmp_path / f).write_text("")
    (tmp_path / "pipelines" / "stage.py").write_text("def main():\n    from xiqa.sub import deep\n")
    (tmp_path / "xiqa" / "sub" / "deep.py").write_text("from . import sibling\n")
    (tmp_path / "xiqa" / "sub" / "sibling.py").write_text("import os\n")
    got = {str(p.relative_to(tmp_path)) for p in reached_files("pipelines.stage", tmp_path)}
    assert got == {"pipelines/__init__.py", "pipelines/stage.py", "xiqa/__init__.py", "xiqa/sub/__init__.py",
                   "xiqa/sub/deep.py", "xiqa/sub/sibling.py"}
    assert uncovered({tmp_path / "xiqa/sub/deep.py"}, ["xiqa/sub"], tmp_path) == []
    assert uncovered({tmp_path / "xiqa/sub/deep.py"}, ["xiqa/other.py"], tmp_path) == ["xiqa/sub/deep.py"]
    # a folder is too wide when it also holds a file the stage never imports; so is a file dep
    # the stage never imports; data deps are not code and are not judged here
    reached = reached_files("pipelines.stage", tmp_path)
    assert too_wide(reached, ["xiqa/sub", "data/raw"], tmp_path) == []
    assert too_wide(reached, ["xiqa"], tmp_path) == ["xiqa (never imports xiqa/unused.py)"]
    assert too_wide(reached, ["xiqa/unused.py"], tmp_path) == ["xiqa/unused.py (never imported)"]
