"""`dvc metrics show`, `dvc metrics diff` and `dvc plots show` read well on the demo's grid.

The report stage's writers fill a throw-away git + DVC repository holding this project's
``dvc.yaml`` and ``params.yaml`` with the demo's shape (its grid: 2 datasets × 2 archs, every
condition, every method), numbers drawn at random; the real DVC then renders them. The finished
tiny study of tests/pipelines/test_study_e2e.py checks the same on numbers from a real run.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

try:
    from tests.conftest import BIN, REPO, run
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, REPO, run

from xiqa import schema as S
from xiqa.report.study import HEADLINE_CLASSIFICATION, _write_plots, write_headline

WIDTH = 120


def widest(text: str) -> int:
    """The width of the widest line of ``text``."""
    return max(len(line) for line in text.splitlines())


def demo_cells() -> list[tuple[str, str]]:
    """The demo's dataset × arch cells, from this project's params.yaml."""
    grid = yaml.safe_load((REPO / "params.yaml").read_text())["grid"]
    return [(m["dataset"], m["arch"]) for m in grid["models"]]


def headline(cells: list[tuple[str, str]], rng: random.Random) -> dict:
    """Every headline number of every cell and condition (6 decimals, as the stage rounds)."""
    keys = [S.agg_metric("mean", m) for m in S.METHODS] + list(HEADLINE_CLASSIFICATION)
    return {(ds, arch, cond): {k: round(rng.random(), 6) for k in keys}
            for ds, arch in cells for cond in S.CONDITIONS}


@pytest.fixture
def demo_project(tmp_path: Path) -> Path:
    """A git + DVC repository with this project's dvc.yaml, params.yaml and plot template."""
    root = tmp_path / "project"
    root.mkdir()
    for item in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy2(REPO / item, root / item)
    run(root, "git", "init", "-q")
    run(root, str(BIN / "dvc"), "init", "-q")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    return root


def test_dvc_metrics_show_and_diff_fit_120_columns_on_the_demo_grid(demo_project):
    """A row per dataset × arch × headline number, a column per condition."""
    root, cells, rng = demo_project, demo_cells(), random.Random(0)
    assert len(cells) == 4 and len({ds for ds, _ in cells}) == 2  # the demo's shape, as the issue counts it
    files = write_headline(root / "metrics", headline(cells, rng))
    assert len(files) == len(cells) * (len(S.METHODS) + len(HEADLINE_CLASSIFICATION))
    assert json.loads((root / "metrics" / "objectcxr-resnet34" / "pg_mean" / "gradcam.json").read_text()).keys() \
        == set(S.CONDITIONS)

    shown = run(root, str(BIN / "dvc"), "metrics", "show").stdout
    lines = shown.splitlines()
    assert lines[0].split() == ["Path", "fr", "sr", "trained"]
    assert len(lines) == 1 + len(files)  # a row per file
    assert widest(shown) <= WIDTH, shown

    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "first study")
    write_headline(root / "metrics", headline(cells, rng))  # every number changes
    diff = run(root, str(BIN / "dvc"), "metrics", "diff").stdout
    assert diff.splitlines()[0].split() == ["Path", "Metric", "HEAD", "workspace", "Change"]
    assert len(diff.splitlines()) == 1 + len(files) * len(S.CONDITIONS)  # a row per file × condition
    assert widest(diff) <= WIDTH, diff


def test_dvc_plots_show_draws_one_grouped_chart_per_dataset(demo_project):
    """A column per arch, a bar per condition, every method and baseline of the dataset."""
    root, cells = demo_project, demo_cells()
    methods = list(S.METHODS)
    stats = {m: {"mean": 0.5, "std": 0.1} for m in methods} | {f"baseline_{b}": {"mean": 0.2} for b in S.BASELINES}
    pg: dict = {}
    for ds, arch in cells:
        pg.setdefault(ds, {})[arch] = {cond: stats for cond in S.CONDITIONS}
    _write_plots(root / "plots", pg, methods)
    plots = json.loads(run(root, str(BIN / "dvc"), "plots", "show", "--json").stdout)["data"]
    assert sorted(plots) == ["plots/pg-lvot.csv", "plots/pg-objectcxr.csv"]
    for name, (chart,) in plots.items():
        spec = chart["content"]
        encoding = spec["spec"]["encoding"]
        assert spec["facet"]["column"]["field"] == "arch" and encoding["color"]["field"] == "condition"
        assert encoding["x"]["field"] == "pg_mean" and encoding["y"]["field"] == "method"
        rows = spec["data"]["values"]
        ds = name.removeprefix("plots/pg-").removesuffix(".csv")
        archs = [a for d, a in cells if d == ds]
        assert len(rows) == len(archs) * len(S.CONDITIONS) * (len(methods) + len(S.BASELINES))
        assert {(r["arch"], r["condition"]) for r in rows} == {(a, c) for a in archs for c in S.CONDITIONS}
