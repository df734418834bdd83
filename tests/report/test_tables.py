"""Tables 2–7 from a runs frame shaped like `mlflow.search_runs` output."""

from __future__ import annotations

import pandas as pd
import pytest

from xiqa.errors import XiqaError
from xiqa.report import schema as S
from xiqa.report import tables as T

METHODS = list(S.METHODS)


def _agg(ds, arch, cond, index, base, std=0.05, skipped=None, one_seed=False):
    row = {"run_id": f"{ds}-{arch}-{cond}", f"tags.{S.KIND}": "aggregate", f"tags.{S.STUDY}": "s1",
           "tags.dataset": ds, "tags.arch": arch, "tags.condition": cond, "tags.grid_index": str(index),
           "tags.methods": ",".join(METHODS)}
    if skipped:
        row[f"tags.{S.STATUS}"] = "skipped"
        row[f"tags.{S.REASON}"] = skipped
        return row
    for i, m in enumerate(METHODS):
        for smoothed, shift in ((True, 0.0), (False, -0.1)):
            row[f"metrics.{S.agg_metric('mean', m, smoothed)}"] = base + i / 100 + shift
            if not one_seed:
                row[f"metrics.{S.agg_metric('std', m, smoothed)}"] = std
            row[f"metrics.{S.agg_metric('ci_low', m, smoothed)}"] = base - 0.1
            row[f"metrics.{S.agg_metric('ci_high', m, smoothed)}"] = base + 0.1
    if cond == "trained":
        row |= {"metrics.test_accuracy_mean": 0.9, "metrics.test_accuracy_std": 0.01,
                "metrics.test_auc_mean": 0.95, "metrics.test_auc_std": 0.02}
    return row


def _runs(reason="no ImageNet weights: put the file in the cache"):
    rows = []
    for i, arch in enumerate(("resnet34", "efficientnet_b0")):
        rows.append(_agg("objectcxr", arch, "trained", i, 0.8 - i * 0.1))
        rows.append(_agg("objectcxr", arch, "fr", i, 0.2))
        rows.append(_agg("objectcxr", arch, "sr", i, 0.0, skipped=reason))
    study = {"run_id": "study", f"tags.{S.KIND}": "study", f"tags.{S.STUDY}": "s1", "tags.dataset": "objectcxr"}
    for m in METHODS:
        study[f"metrics.dom/{m}"] = 0.1
        study[f"metrics.mmd/{m}"] = 0.4
        study[f"metrics.mmd_p/{m}"] = 0.1
    rows.append(study)
    return pd.DataFrame(rows)


def _by_key(tables):
    return {t.key: t for t in tables}


def test_every_table_has_every_method_row_and_condition_column():
    tables = _by_key(T.build_tables(_runs()))
    assert set(tables) == {"table2", "table4-objectcxr", "table6-objectcxr", "table7"}
    labels = [S.method_label(m) for m in S.METHODS]
    for key in ("table2", "table4-objectcxr", "table6-objectcxr"):
        assert tables[key].rows == labels
    assert tables["table4-objectcxr"].columns == [
        f"{a} · {c}" for a in ("ResNet-34", "EfficientNet-B0") for c in ("SR", "FR", "Trained")]
    assert tables["table2"].columns == [f"Object-CXR {a} · smoothing {s}" for a in ("ResNet-34", "EfficientNet-B0")
                                        for s in ("off", "on")]
    assert tables["table6-objectcxr"].columns == ["ResNet-34", "EfficientNet-B0", "DoM", "MMD (RBF)"]
    assert tables["table7"].rows == ["Object-CXR ResNet-34", "Object-CXR EfficientNet-B0"]


def test_cells_show_the_logged_mean_std_and_interval_and_skip_reasons():
    t = _by_key(T.build_tables(_runs()))["table4-objectcxr"]
    cell = t.cell("Grad-CAM", "ResNet-34 · Trained")
    assert (cell.mean, cell.std) == (pytest.approx(0.83), 0.05)
    assert cell.text() == "0.830 ± 0.050 [0.70, 0.90]"
    assert t.cell("Grad-CAM", "ResNet-34 · SR").text() == "skipped: no ImageNet weights"
    t2 = _by_key(T.build_tables(_runs()))["table2"]
    assert t2.cell("Grad-CAM", "Object-CXR ResNet-34 · smoothing off").mean == pytest.approx(0.73)
    t6 = _by_key(T.build_tables(_runs()))["table6-objectcxr"]
    assert t6.cell("Grad-CAM", "MMD (RBF)").text() == "0.400 (p = 0.10)"


def test_single_seed_cells_have_no_std():
    runs = pd.DataFrame([_agg("lvot", "resnet50", "trained", 0, 0.5, one_seed=True)])
    t = _by_key(T.build_tables(runs))["table3-lvot"]
    assert t.cell("Grad-CAM", "Trained").std is None
    assert t.cell("Grad-CAM", "Trained").text().startswith("0.530 [")
    assert t.cell("Grad-CAM", "FR").text() == "not in the grid"


def test_renderers_write_one_file_per_table_per_format(tmp_path):
    tables = T.build_tables(_runs())
    written = T.write_tables(tables, tmp_path, ["md", "csv", "latex", "html"])
    assert len(written) == 4 * len(tables)
    md = (tmp_path / "table4-objectcxr.md").read_text()
    assert "| Grad-CAM | skipped: no ImageNet weights | 0.230 ± 0.050 [0.10, 0.30] | 0.830 ± 0.050" in md
    csv = pd.read_csv(tmp_path / "table4-objectcxr.csv", index_col=0)
    assert csv.loc["Grad-CAM", "ResNet-34 · Trained mean"] == pytest.approx(0.83)
    assert csv.loc["Grad-CAM", "ResNet-34 · Trained std"] == pytest.approx(0.05)
    assert csv.loc["Grad-CAM", "ResNet-34 · SR note"] == "skipped: no ImageNet weights"
    assert "SR ResNet-34 skipped: no ImageNet weights: put the file in the cache" in md
    tex = (tmp_path / "table4-objectcxr.tex").read_text()
    assert r"0.830 $\pm$ 0.050" in tex and r"\begin{tabular}{lrrrrrr}" in tex
    assert "Input $\\times$ Gradient" in tex
    html = (tmp_path / "table6-objectcxr.html").read_text()
    assert "<th>DoM</th>" in html and "<td>0.100</td>" in html


def test_an_empty_study_is_a_clear_error():
    with pytest.raises(XiqaError, match="dvc repro"):
        T.build_tables(pd.DataFrame())
