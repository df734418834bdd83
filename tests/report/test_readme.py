"""The README's demo results are generated from the committed runs, never typed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from test_tables import _agg, _runs
from xiqa.errors import XiqaError
from xiqa.report import readme
from xiqa.report import tables as T

ROOT = Path(__file__).resolve().parents[2]


def test_readme_section_is_what_the_committed_demo_runs_render() -> None:
    text = (ROOT / "README.md").read_text()
    assert readme.current_section(text) == readme.render_section(ROOT / "docs" / "demo-results")


def _study(shift: float = 0.0) -> pd.DataFrame:
    frame = _runs()
    rows = []
    for i, arch in enumerate(("resnet50", "efficientnet_b0")):
        rows.append(_agg("lvot", arch, "trained", 2 + i, 0.7 + shift))
        rows.append(_agg("lvot", arch, "fr", 2 + i, 0.75))
        rows.append(_agg("lvot", arch, "sr", 2 + i, 0.0, skipped="no ImageNet weights"))
    return pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)


def _report(tmp: Path, name: str, shift: float = 0.0) -> Path:
    out = tmp / name
    T.write_tables(T.build_tables(_study(shift)), out, ["md", "csv"])
    return out


def test_spread_and_claims_are_read_from_the_two_runs_tables(tmp_path: Path) -> None:
    a, b = _report(tmp_path, "a"), _report(tmp_path, "b", shift=0.02)
    meta = {"seconds": 61.0, "threads": "OMP_NUM_THREADS=1", "machine": "2 cores", "stages": "train 1.0 min"}
    readme.collect((a, b), (meta, meta), tmp_path / "results")
    spread = {s.table: s for s in readme.spread(tmp_path / "results" / "run-a", tmp_path / "results" / "run-b")}
    assert spread["table4-objectcxr"].moved == 0  # Object-CXR is the same in both runs
    lvot = spread["table3-lvot"]
    assert lvot.moved == 2 * 10 and lvot.max_abs == pytest.approx(0.02)  # both archs' trained cells
    claims = readme.claims(tmp_path / "results" / "run-a")
    # Object-CXR: trained 0.8 + i/100 against FR 0.2 + i/100; LVOT trained 0.7 against FR 0.75
    assert claims["Object-CXR ResNet-34: trained above fully randomised (methods)"] == "10 of 10"
    assert claims["LVOT ResNet-50: trained above fully randomised (methods)"] == "0 of 10"
    assert claims["Object-CXR ResNet-34: trained NormGrad multi above single (VILs)"] == "3 of 3"
    section = readme.render_section(tmp_path / "results")
    assert section.startswith(readme.START) and section.rstrip().endswith(readme.END)
    assert "#### Table 4" in section and "1 min 01 s" in section
    text = f"intro\n{readme.START}\nold\n{readme.END}\nafter\n"
    assert readme.replace_section(text, section) == f"intro\n{section.rstrip()}\nafter\n"


def test_a_missing_table_or_marker_is_one_clear_error(tmp_path: Path) -> None:
    a = _report(tmp_path, "a")
    (a / "table7.md").unlink()
    with pytest.raises(XiqaError, match="missing table7"):
        readme.collect((a, a), ({}, {}), tmp_path / "results")
    with pytest.raises(XiqaError, match="markers"):
        readme.replace_section("no markers here", "x")
