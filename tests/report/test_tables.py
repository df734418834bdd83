"""Tables 2–9 from a runs frame shaped like `mlflow.search_runs` output."""

from __future__ import annotations

import html as html_lib

import pandas as pd
import pytest

from xiqa.errors import XiqaError
from xiqa import schema as S
from xiqa.report import render as R
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
    for j, b in enumerate(S.BASELINES):  # chance 0.05, centre 0.25 on Object-CXR
        row[f"metrics.{S.agg_baseline_metric('mean', b)}"] = 0.05 + 0.2 * j
        row[f"metrics.{S.agg_baseline_metric('ci_low', b)}"] = 0.04 + 0.2 * j
        row[f"metrics.{S.agg_baseline_metric('ci_high', b)}"] = 0.06 + 0.2 * j
    size, at = (128, 600) if ds == "objectcxr" else (112, 224)
    row[f"metrics.{S.TAU}"] = 15 * size / at
    row |= {"params.tolerance": "15.0", "params.tolerance_at": str(at), "params.image_size": str(size),
            f"params.{S.TAU}": str(15 * size / at)}
    for j, k in enumerate(S.LOC_METRICS):  # mass 0.3 + i / 100 ..., the last method's maps all constant
        for i, m in enumerate(METHODS[:-1]):
            row[f"metrics.{S.loc_agg_metric(k, 'mean', m)}"] = base / 2 + j / 10 + i / 100
            if not one_seed:
                row[f"metrics.{S.loc_agg_metric(k, 'std', m)}"] = std
            row[f"metrics.{S.loc_agg_metric(k, 'ci_low', m)}"] = base / 2 - 0.1
            row[f"metrics.{S.loc_agg_metric(k, 'ci_high', m)}"] = base / 2 + 0.1
        for b, value in zip(S.LOC_BASELINES, (0.06, 0.12)):
            row[f"metrics.{S.loc_agg_baseline_metric(k, 'mean', b)}"] = value
            row[f"metrics.{S.loc_agg_baseline_metric(k, 'ci_low', b)}"] = value - 0.01
            row[f"metrics.{S.loc_agg_baseline_metric(k, 'ci_high', b)}"] = value + 0.01
    row["metrics.constant_maps"] = 3.0
    if cond == "trained":
        row |= {"metrics.test_accuracy_mean": 0.9, "metrics.test_accuracy_std": 0.01,
                "metrics.test_auc_mean": 0.95, "metrics.test_auc_std": 0.02}
        for i, m in enumerate(METHODS):  # MPRT final Spearman 0.1, 0.2, ... (the 5th and later fail at 0.5)
            for stat in S.SANITY_STATS:
                row[f"metrics.{S.sanity_metric(stat, 'mean', m)}"] = 0.1 * (i + 1) if index == 0 else 0.05
                row[f"metrics.{S.sanity_metric(stat, 'std', m)}"] = 0.02
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


BASELINE_ROWS = ["chance (uniform peak)", "centre peak", "τ (input pixels)"]


def test_every_table_has_every_method_row_and_condition_column():
    tables = _by_key(T.build_tables(_runs()))
    assert set(tables) == {"table2", "table4-objectcxr", "table6-objectcxr", "table7", "table8-objectcxr",
                           "table9-objectcxr"}
    labels = [S.method_label(m) for m in S.METHODS]
    for key in ("table2", "table4-objectcxr", "table6-objectcxr"):
        assert tables[key].rows == labels + BASELINE_ROWS
    assert tables["table4-objectcxr"].columns == [
        f"{a} · {c}" for a in ("ResNet-34", "EfficientNet-B0") for c in ("SR (skipped)", "FR", "Trained")]
    assert tables["table2"].columns == [f"Object-CXR {a} · smoothing {s}" for a in ("ResNet-34", "EfficientNet-B0")
                                        for s in ("off", "on")]
    assert tables["table6-objectcxr"].columns == ["ResNet-34", "EfficientNet-B0", "DoM", "MMD (RBF)"]
    assert tables["table7"].rows == ["Object-CXR ResNet-34", "Object-CXR EfficientNet-B0"]


def test_cells_show_the_logged_mean_std_and_interval_and_skip_reasons():
    t = _by_key(T.build_tables(_runs()))["table4-objectcxr"]
    cell = t.cell("Grad-CAM", "ResNet-34 · Trained")
    assert (cell.mean, cell.std) == (pytest.approx(0.83), 0.05)
    assert cell.text() == "0.830 ± 0.050 [0.70, 0.90]"
    # a skipped condition: its column says so, its cells stay empty, one table note gives the reason
    assert t.cell("Grad-CAM", "ResNet-34 · SR (skipped)").text() == "–"
    assert t.notes.count("SR ResNet-34 skipped: no ImageNet weights: put the file in the cache") == 1
    t2 = _by_key(T.build_tables(_runs()))["table2"]
    assert t2.cell("Grad-CAM", "Object-CXR ResNet-34 · smoothing off").mean == pytest.approx(0.73)
    t6 = _by_key(T.build_tables(_runs()))["table6-objectcxr"]
    assert t6.cell("Grad-CAM", "MMD (RBF)").text() == "0.400 (p = 0.10)"


def test_sr_from_a_stand_in_start_is_labelled_so_and_a_note_names_every_start():
    runs = pd.DataFrame([_agg("lvot", "resnet50", c, 0, 0.5) | {"tags.start": start} for c, start in
                         (("trained", "stand-in:abc123"), ("sr", "stand-in:abc123"))] +
                        [_agg("lvot", "resnet50", "fr", 0, 0.2)])
    tables = _by_key(T.build_tables(runs))
    t3 = tables["table3-lvot"]
    assert t3.columns == ["SR (stand-in pretraining)", "FR", "Trained"]
    assert t3.cell("Grad-CAM", "SR (stand-in pretraining)").mean == pytest.approx(0.5 + METHODS.index("gradcam") / 100)
    note = [n for n in t3.notes if n.startswith("Start of ResNet-50")]
    assert note == ["Start of ResNet-50's backbone — Trained: stand-in:abc123; SR: stand-in:abc123 (imagenet: "
                    "ImageNet weights; stand-in:<run>: the pretrain stage's MLflow run, no ImageNet weights "
                    "offline; scratch: random)."]
    assert note[0] in tables["table7"].notes
    imagenet = runs.assign(**{"tags.start": "imagenet"})
    assert _by_key(T.build_tables(imagenet))["table3-lvot"].columns == ["SR", "FR", "Trained"]


def test_single_seed_cells_have_no_std():
    runs = pd.DataFrame([_agg("lvot", "resnet50", "trained", 0, 0.5, one_seed=True)])
    t = _by_key(T.build_tables(runs))["table3-lvot"]
    assert t.cell("Grad-CAM", "Trained").std is None
    assert t.cell("Grad-CAM", "Trained").text().startswith("0.530 [")
    assert t.cell("Grad-CAM", "FR (skipped)").text() == "not in the grid"


def test_renderers_write_one_file_per_table_per_format(tmp_path):
    tables = T.build_tables(_runs())
    written = R.write_tables(tables, tmp_path, ["md", "csv", "latex", "html"])
    assert len(written) == 4 * len(tables)
    md = (tmp_path / "table4-objectcxr.md").read_text()
    assert "| Grad-CAM | – | 0.230 ± 0.050 [0.10, 0.30] | 0.830 ± 0.050" in md
    csv = pd.read_csv(tmp_path / "table4-objectcxr.csv", index_col="method")
    assert csv.loc["gradcam", "label"] == "Grad-CAM"
    assert csv.loc["gradcam", "objectcxr/resnet34/trained/pg_mean"] == pytest.approx(0.83)
    assert csv.loc["gradcam", "objectcxr/resnet34/trained/pg_std"] == pytest.approx(0.05)
    assert csv.loc["gradcam", "objectcxr/resnet34/trained/pg_ci_low"] == pytest.approx(0.8 - 0.1)  # as pg_ci_low/<m>
    assert "SR ResNet-34 skipped: no ImageNet weights: put the file in the cache" in md
    tex = (tmp_path / "table4-objectcxr.tex").read_text()
    assert r"0.830 $\pm$ 0.050" in tex and r"\begin{tabular}{lrrrrrr}" in tex
    assert "Input $\\times$ Gradient" in tex
    html = (tmp_path / "table6-objectcxr.html").read_text()
    assert "<th>DoM</th>" in html and "<td>0.100</td>" in html


def test_the_renderer_table_covers_exactly_the_report_formats_and_names_an_unknown_one(tmp_path):
    assert tuple(R.RENDERERS) == S.REPORT_FORMATS
    assert sorted(p.name for p in R.write_tables(T.build_tables(_runs())[:1], tmp_path, S.REPORT_FORMATS)) == [
        "table2.csv", "table2.html", "table2.md", "table2.tex"]
    with pytest.raises(XiqaError, match="unknown report format 'pdf'; choose from md, csv, latex, html"):
        R.write_tables([], tmp_path, ["pdf"])


def test_csv_rows_carry_the_metric_keys_method_ids_next_to_the_labels_and_whole_notes(tmp_path):
    long = "no ImageNet weights for this architecture in the torch hub cache or in randomise.imagenet_weights: " \
           "put the file there or set randomise.imagenet_weights"
    tables = T.build_tables(_runs(reason=long))
    R.write_tables(tables, tmp_path, ["md", "csv"])
    for t in tables:
        csv = pd.read_csv(tmp_path / f"{t.key}.csv", keep_default_na=False)
        assert list(csv.columns[:2]) == [t.row_header, "label"]
        assert list(csv["label"]) == t.rows
    t4 = pd.read_csv(tmp_path / "table4-objectcxr.csv", index_col="method")
    assert list(t4.index) == list(S.METHODS) + [f"baseline_{b}" for b in S.BASELINES] + [S.TAU]
    assert list(t4["label"]) == [S.method_label(m) for m in S.METHODS] + BASELINE_ROWS
    assert (t4["objectcxr/resnet34/sr/pg_note"] == f"skipped: {long}").all()  # never cut in the CSV
    md = (tmp_path / "table4-objectcxr.md").read_text()
    assert f"skipped: {long}" in md and "| – |" in md  # said once, in the note; the cells stay empty
    t8 = pd.read_csv(tmp_path / "table8-objectcxr.csv", index_col="method")
    assert list(t8.index[-2:]) == [f"baseline_{b}" for b in S.LOC_BASELINES]
    t7 = pd.read_csv(tmp_path / "table7.csv", index_col="model")
    assert list(t7.index) == ["objectcxr-resnet34", "objectcxr-efficientnet_b0"]


def test_every_csv_number_is_the_metric_its_column_and_row_name(tmp_path):
    """A CSV column ``<ds>/<arch>/<condition>/<key>`` at row ``<id>`` holds the metric
    ``<key>/<id>`` of that aggregate run (``<ds>/<a>~<b>/<key>``: the study run's), and Table 7's
    ``<key>`` at row ``<ds>-<arch>`` the metric ``<key>`` of the trained aggregate: checked for
    every number of every table, straight against the runs frame."""
    runs = _runs()
    for m in METHODS:  # distinct values, so that a column read from the wrong metric shows
        runs[f"metrics.dom/{m}"] = 0.01 * (METHODS.index(m) + 1)
        runs[f"metrics.mmd/{m}"] = 0.3 + 0.01 * METHODS.index(m)
    tables = T.build_tables(runs)
    R.write_tables(tables, tmp_path, ["csv"])

    def metric(coords: list[str], key: str) -> float:
        ds, *rest = coords
        if len(rest) == 1:  # an architecture pair: the dataset's study run
            row = runs[(runs[f"tags.{S.KIND}"] == "study") & (runs["tags.dataset"] == ds)]
        else:
            row = runs[(runs["tags.dataset"] == ds) & (runs["tags.arch"] == rest[0])
                       & (runs["tags.condition"] == rest[1]) & (runs[f"tags.{S.KIND}"] == "aggregate")]
        assert len(row) == 1, coords
        return float(row.iloc[0][f"metrics.{key}"])

    checked = 0
    for t in tables:
        csv = pd.read_csv(tmp_path / f"{t.key}.csv", index_col=0)
        for column in csv.columns.drop("label"):
            *coords, stem = column.split("/")
            for row_id, value in csv[column].items():
                if stem.endswith("_note") or pd.isna(value) or str(row_id).startswith("baseline_") or row_id == S.TAU:
                    continue
                if t.key == "table7":
                    ds, arch = str(row_id).split("-", 1)
                    expected = metric([ds, arch, "trained"], stem)
                else:
                    expected = metric(coords, f"{stem}/{row_id}")
                assert float(value) == expected, (t.key, column, row_id)
                checked += 1
    assert checked > 500


def test_an_empty_study_is_a_clear_error():
    with pytest.raises(XiqaError, match="dvc repro"):
        T.build_tables(pd.DataFrame())


def test_pointing_game_tables_end_with_the_baselines_and_tau_in_every_format(tmp_path):
    tables = T.build_tables(_runs())
    t4 = _by_key(tables)["table4-objectcxr"]
    assert t4.cell("chance (uniform peak)", "ResNet-34 · Trained").text() == "0.050 [0.04, 0.06]"  # no std
    assert t4.cell("centre peak", "EfficientNet-B0 · FR").text() == "0.250 [0.24, 0.26]"
    assert t4.cell("τ (input pixels)", "ResNet-34 · FR").text() == "3.20"
    assert t4.cell("chance (uniform peak)", "ResNet-34 · SR (skipped)").text() == "–"
    tau_note = ("Pointing Game τ on Object-CXR: 3.2 input pixels (15 px at an input of 600 px, scaled to the "
                "study's 128 px input); a hit is a peak at distance < τ.")
    for key in ("table2", "table4-objectcxr", "table6-objectcxr"):
        assert tau_note in _by_key(tables)[key].notes
    t6 = _by_key(tables)["table6-objectcxr"]
    assert t6.cell("centre peak", "ResNet-34").mean == pytest.approx(0.25)
    assert t6.cell("centre peak", "DoM").text() == "–"
    R.write_tables(tables, tmp_path, ["md", "csv", "latex", "html"])
    for key in ("table2", "table4-objectcxr", "table6-objectcxr"):
        md = (tmp_path / f"{key}.md").read_text()
        assert "| chance (uniform peak) | " in md and "| centre peak | " in md and "| τ (input pixels) | " in md
        assert tau_note in md
        csv = pd.read_csv(tmp_path / f"{key}.csv", index_col="label")
        assert list(csv.index[-3:]) == BASELINE_ROWS
        mean_col = [c for c in csv.columns if c.endswith("/pg_mean") and "/sr/" not in c][0]  # SR is skipped
        assert csv.loc["τ (input pixels)", mean_col] == 3.2
        assert csv.loc["chance (uniform peak)", mean_col] == pytest.approx(0.05)
        tex = (tmp_path / f"{key}.tex").read_text()
        assert "chance (uniform peak) & " in tex and r"$\tau$ (input pixels) & " in tex
        assert r"Pointing Game $\tau$ on Object-CXR: 3.2 input pixels" in tex
        html = (tmp_path / f"{key}.html").read_text()
        assert "<th>centre peak</th>" in html and "<th>τ (input pixels)</th>" in html
        assert html_lib.escape(tau_note) in html
    t2 = pd.read_csv(tmp_path / "table2.csv", index_col="label")
    assert t2.loc["chance (uniform peak)", "objectcxr/resnet34/trained/pg_raw_mean"] == pytest.approx(0.05)
    assert t2.loc["chance (uniform peak)", "objectcxr/resnet34/trained/pg_mean"] == pytest.approx(0.05)


def test_tau_is_stated_per_dataset_and_missing_tau_is_said():
    runs = pd.DataFrame([_agg("lvot", "resnet50", "trained", 0, 0.5), _agg("objectcxr", "resnet34", "trained", 1, 0.5)])
    t2 = _by_key(T.build_tables(runs))["table2"]
    assert t2.cell("τ (input pixels)", "LVOT ResNet-50 · smoothing on").mean == 7.5
    assert t2.cell("τ (input pixels)", "Object-CXR ResNet-34 · smoothing on").mean == 3.2
    assert any(n.startswith("Pointing Game τ on LVOT: 7.5 input pixels (15 px at an input of 224 px") for n in t2.notes)
    old = runs.drop(columns=[f"metrics.{S.TAU}"])
    t3 = _by_key(T.build_tables(old))["table3-lvot"]
    assert t3.cell("τ (input pixels)", "Trained").text() == "not logged"
    assert "Pointing Game τ on LVOT: not logged (rerun the evaluate and report stages)." in t3.notes


def test_the_smoothing_note_quotes_the_logged_sigma_and_kernel_and_says_when_they_are_missing():
    runs = _runs().assign(**{"params.smooth_sigma": "1.0", "params.smooth_kernel": "11"})
    notes = _by_key(T.build_tables(runs))["table2"].notes
    assert "Smoothing: Gaussian σ = 1.0, 11×11 kernel, reflect padding." in notes
    other = _runs().assign(**{"params.smooth_sigma": "2.5", "params.smooth_kernel": "7"})
    assert "Smoothing: Gaussian σ = 2.5, 7×7 kernel, reflect padding." in _by_key(T.build_tables(other))["table2"].notes
    missing = _by_key(T.build_tables(_runs()))["table2"].notes
    assert "Smoothing: Gaussian, reflect padding (σ and kernel not logged: rerun the report stage)." in missing


def test_table8_has_method_and_baseline_rows_and_a_column_per_logged_condition_and_metric():
    t = _by_key(T.build_tables(_runs()))["table8-objectcxr"]
    assert t.rows == [S.method_label(m) for m in S.METHODS] + ["uniform map", "centre Gaussian map"]
    # SR was skipped: no columns of notes, the reason is a note
    assert t.columns == [f"{a} · {c} · {k}" for a in ("ResNet-34", "EfficientNet-B0") for c in ("FR", "Trained")
                         for k in ("mass", "rank", "AUC", "top-k")]
    assert any("skipped: no ImageNet weights" in n for n in t.notes)
    assert t.cell("Input × Gradient", "ResNet-34 · Trained · rank").text() == "0.500 ± 0.050 [0.30, 0.50]"
    assert t.cell("centre Gaussian map", "ResNet-34 · FR · AUC").text() == "0.120 [0.11, 0.13]"
    last = S.method_label(S.METHODS[-1])
    assert t.cell(last, "ResNet-34 · Trained · mass").text() == "constant maps"
    csv = R.to_csv(t)
    assert "baseline_uniform,uniform map," in csv and "objectcxr/resnet34/trained/mass_ci_low" in csv
    assert r"centre Gaussian map &" in R.to_latex(t) and "<th>uniform map</th>" in R.to_html(t)


def test_table9_lists_the_methods_whose_final_similarity_stays_above_the_threshold_from_the_numbers():
    t = _by_key(T.build_tables(_runs()))["table9-objectcxr"]
    assert t.rows == [S.method_label(m) for m in S.METHODS]
    col = f"ResNet-34 · {S.SANITY_STAT_LABELS['mprt_spearman_final']}"
    assert t.cell(S.method_label(S.METHODS[2]), col).text() == "0.300 ± 0.020"
    failing = [S.method_label(m) for i, m in enumerate(S.METHODS) if 0.1 * (i + 1) > S.MPRT_PASS_THRESHOLD]
    assert f"ResNet-34: methods whose mean Spearman after full randomisation stays above 0.5 (fail the MPRT): " \
           f"{', '.join(failing)}." in t.notes
    assert "EfficientNet-B0: methods whose mean Spearman after full randomisation stays above 0.5 " \
           "(fail the MPRT): none." in t.notes
    assert "| Grad-CAM |" in R.to_markdown(t)


def test_table9_says_when_the_sanity_stage_has_not_run():
    runs = _runs()
    runs = runs.drop(columns=[c for c in runs.columns if c.startswith(("metrics.mprt", "metrics.random_logit"))])
    t = _by_key(T.build_tables(runs))["table9-objectcxr"]
    assert t.cell("Grad-CAM", f"ResNet-34 · {S.SANITY_STAT_LABELS['random_logit_ssim']}").text() == "not run"
    assert "No sanity results: run `dvc repro sanity` (then the report)." in t.notes


def test_the_training_precision_of_each_architecture_is_a_note_of_its_tables():
    runs = pd.DataFrame([_agg("lvot", "resnet50", "trained", 0, 0.5) | {"tags.precision": "fp32"},
                         _agg("lvot", "efficientnet_b0", "trained", 1, 0.5) | {"tags.precision": "bf16,fp32"},
                         _agg("objectcxr", "resnet34", "trained", 2, 0.5)])  # a study from before the tag
    tables = _by_key(T.build_tables(runs))
    note = ("Training precision (LVOT): ResNet-50 fp32; EfficientNet-B0 bf16 / fp32 (fp32, or bf16 autocast "
            "where the CPU has the instructions and a probe found it faster: train.<dataset>.precision: auto).")
    assert tables["table3-lvot"].notes.count(note) == 1 and note in tables["table7"].notes
    assert not [n for n in tables["table7"].notes if n.startswith("Training precision (Object-CXR)")]
