"""The generated docs: README.md's and docs/demo-results/README.md's demo results (from the committed
runs, never typed), docs/OUTPUTS.md (from xiqa/schema.py); the README's shape and the docs' links."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from test_tables import _agg, _runs

from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.report import outputs, readme
from xiqa.report import render as R
from xiqa.report import tables as T

ROOT = Path(__file__).resolve().parents[2]


def test_readme_and_the_demo_page_are_what_the_committed_demo_runs_render() -> None:
    """README.md and docs/demo-results/README.md, generated sections included, are what
    ``python scripts/readme_results.py`` renders from docs/demo-results alone."""
    for path, text in readme.rendered(ROOT).items():
        assert path.read_text() == text, f"{path}: run `python scripts/readme_results.py`"
    text = (ROOT / "README.md").read_text()
    assert readme.current_section(text) == readme.render_section(ROOT / "docs" / "demo-results")
    assert readme.current_section(text, readme.TIME) == readme.render_time(ROOT / "docs" / "demo-results")


def test_outputs_catalogue_is_what_the_schema_renders() -> None:
    assert (ROOT / outputs.PATH).read_text() == outputs.render(), "run `python scripts/readme_results.py`"
    text = outputs.render()
    # every name set of the schema is in it, once per value at least
    for value in (*S.METHODS, *S.LOC_METRICS, *S.SANITY_STATS, *S.PER_IMAGE_COLUMNS, *S.BASELINE_COLUMNS):
        assert f"`{value}`" in text, value
    assert f"`{S.loc_agg_baseline_metric('<k>', '<stat>', '<b>')}`" in text


def test_readme_is_a_front_door_with_the_two_commands_ci_runs_and_the_figure() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "make study   #" in text and "make test    #" in text
    makefile = (ROOT / "Makefile").read_text()
    assert "\nstudy:" in makefile and "\ntest:" in makefile
    assert "\nmake test\n" in (ROOT / ".ci" / "run").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images == [readme.FIGURE.as_posix()]  # the one picture: what readme_results.py copies


DOCS = ("README.md", "docs/OUTPUTS.md", "docs/TEAM.md", "docs/CLUSTER.md", "docs/PAPER-SCALE.md",
        "benchmarks/README.md", "docs/demo-results/README.md")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", markdown, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS)
def test_every_link_between_the_docs_reaches_a_file_and_heading(doc: str) -> None:
    text = (ROOT / doc).read_text()
    for target in re.findall(r"(?<!!)\[[^\]]*\]\(([^)#\s]*)(#[^)\s]*)?\)", text):
        path, anchor = target
        if path.startswith(("http://", "https://")):
            continue
        file = (ROOT / doc).parent / path if path else ROOT / doc
        assert file.exists(), f"{doc}: link to {path}"
        if anchor:
            assert anchor[1:] in _anchors(file.read_text()), f"{doc}: no heading {anchor} in {path or doc}"


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
    R.write_tables(T.build_tables(_study(shift)), out, ["md", "csv"])
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
    facts = readme.facts(tmp_path / "results" / "run-a", 61.0)
    assert facts[0] == "wall time 1 min 01 s: within the 25-minute budget (23 min 59 s to spare)"
    assert readme.facts(tmp_path / "results" / "run-a", 1501.0)[0].endswith("over** the 25-minute budget by 0 min 01 s")
    assert readme.facts(tmp_path / "results" / "run-a", 1501.0, budget=False)[0] == "wall time 25 min 01 s"
    # the best Object-CXR cells are the last method's (0.8 + 9/100 trained, 0.2 + 9/100 FR)
    cxr = next(f for f in facts if f.startswith("Object-CXR (Pointing Game)"))
    assert "best Trained cell 0.890" in cxr and "best FR cell 0.290" in cxr, cxr
    # each model's test AUC against SPEC 3's target (Object-CXR 0.90, LVOT 0.95)
    auc = [f for f in facts if "target ≥" in f]
    assert auc and all(f.startswith(("Object-CXR", "LVOT")) for f in auc)
    assert all(("target ≥ 0.90" in f) == f.startswith("Object-CXR") for f in auc)
    section = readme.render_section(tmp_path / "results")
    assert section.startswith(readme.START) and section.rstrip().endswith(readme.END)
    assert f"- {facts[1]}" in section and "### Table 4" not in section  # the README: numbers, no tables
    assert "wall time" not in section  # said once, by render_time
    page = readme.render_tables(tmp_path / "results")
    assert "\n### Table 4" in page and "1 min 01 s" in page and "\n### The paper's claims" in page
    assert "**1 min 01 s**, within the 25-minute budget (23 min 59 s to spare): train 1.0 min." in (
        readme.render_time(tmp_path / "results"))
    text = f"intro\n{readme.START}\nold\n{readme.END}\nafter\n"
    assert readme.replace_section(text, section) == f"intro\n{section.rstrip()}\nafter\n"


def test_a_missing_table_or_marker_is_one_clear_error(tmp_path: Path) -> None:
    a = _report(tmp_path, "a")
    (a / "table7.md").unlink()
    with pytest.raises(XiqaError, match="missing table7"):
        readme.collect((a, a), ({}, {}), tmp_path / "results")
    with pytest.raises(XiqaError, match="markers"):
        readme.replace_section("no markers here", "x")
    with pytest.raises(XiqaError, match="figures: none of overlay-objectcxr.png"):
        readme.overlay_source(a)


def test_collect_copies_each_runs_overlay_and_names_the_readmes(tmp_path: Path) -> None:
    a, b = _report(tmp_path, "a"), _report(tmp_path, "b")
    (a / "figures").mkdir()
    for name in ("overlay-lvot.png", "overlay-objectcxr.png", "sanity-objectcxr.png"):
        (a / "figures" / name).write_bytes(name.encode())
    readme.collect((a, b), ({}, {}), tmp_path / "results")
    assert sorted(p.name for p in (tmp_path / "results" / "run-a").glob("*.png")) == [
        "overlay-lvot.png", "overlay-objectcxr.png"]
    assert not list((tmp_path / "results" / "run-b").glob("*.png"))
    assert readme.overlay_source(a) == a / "figures" / "overlay-objectcxr.png"


@pytest.mark.parametrize("run", readme.RUNS)
def test_the_readmes_prose_holds_in_each_committed_run(run: str) -> None:
    """The hand-written paragraph of docs/demo-results/README.md ("What the two runs show")
    states four things without numbers; each must hold in both committed runs."""
    folder = ROOT / "docs" / "demo-results" / run
    # 1. the classifiers do not learn at the demo's scale: test accuracy and AUC near guessing
    t7 = readme._frame(folder, "table7")
    for col in ("test_accuracy_mean", "test_auc_mean"):
        values = pd.to_numeric(t7[col], errors="coerce").dropna()
        assert len(values) and values.between(0.35, 0.65).all(), (col, values.tolist())
    labels = [readme._label(m) for m in readme.S.METHODS]
    for stem, dataset in (("table4-objectcxr", "Object-CXR"), ("table3-lvot", "LVOT")):
        frame = readme._frame(folder, stem)
        trained = readme._arch_columns(frame, "trained")
        fr = readme._arch_columns(frame, "fr")
        chance = {a: readme._value(frame, readme.S.BASELINE_LABELS["chance"], c) for a, c in trained.items()}
        centre = {a: readme._value(frame, readme.S.BASELINE_LABELS["centre"], c) for a, c in trained.items()}
        cells = {(a, cond, m): readme._value(frame, m, col)
                 for cond, cols in (("trained", trained), ("fr", fr)) for a, col in cols.items() for m in labels}
        if dataset == "Object-CXR":
            # 2. fully randomised gradient maps hit the objects well above chance (2x or more)
            best_fr = max(v for (a, cond, _), v in cells.items() if cond == "fr" and v is not None)
            assert best_fr >= 2 * max(chance.values()), (best_fr, chance)
        else:
            # 3. on LVOT the centre peak beats every method of every trained and FR model
            assert all(v is None or v < min(centre.values()) for v in cells.values()), centre


def test_fully_randomised_cells_are_the_same_in_both_committed_runs() -> None:
    """docs/demo-results/README.md says the FR cells do not move between the runs (their weights come from the
    seed alone, not from training, so threads cannot change them)."""
    a, b = (ROOT / "docs" / "demo-results" / r for r in readme.RUNS)
    for stem in ("table4-objectcxr", "table3-lvot"):
        fa, fb = readme._frame(a, stem), readme._frame(b, stem)
        cols = list(readme._arch_columns(fa, "fr").values())
        assert cols
        pd.testing.assert_frame_equal(fa[cols].apply(pd.to_numeric, errors="coerce"),
                                      fb[cols].apply(pd.to_numeric, errors="coerce"))
