"""`xiqa report` reads the latest study's runs from the tracking store with mlflow.search_runs."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from xiqa.cli import app
from xiqa import schema as S

try:
    from tests.report.test_tables import _runs
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from test_tables import _runs


def _log_study(root, study: str, shift: float = 0.0) -> None:
    """Log the fake study of test_tables as real MLflow runs (one run per row)."""
    import mlflow

    from xiqa.tracking import store

    exp = store.experiment_id(root, S.STUDY_EXPERIMENT)
    for _, row in _runs().iterrows():
        tags = {k[5:]: str(v) for k, v in row.items() if k.startswith("tags.") and isinstance(v, str)}
        tags[S.STUDY] = study
        metrics = {k[8:]: float(v) + shift for k, v in row.items()
                   if k.startswith("metrics.") and not (isinstance(v, float) and math.isnan(v))}
        params = {k[7:]: v for k, v in row.items() if k.startswith("params.") and isinstance(v, str)}
        with mlflow.start_run(experiment_id=exp, tags=tags):
            if metrics:
                mlflow.log_metrics(metrics)
            if params:
                mlflow.log_params(params)
    with mlflow.start_run(experiment_id=exp, tags={S.KIND: "report", S.STUDY: study}):
        pass  # the report stage logs it last: it marks the study finished


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    (root / "params.yaml").write_text("{}\n")
    _log_study(root, "old", shift=-0.5)
    _log_study(root, "new")
    return root


def test_report_writes_every_table_in_every_format_from_the_latest_study(project, tmp_path, monkeypatch):
    monkeypatch.setenv("XIQA_PROJECT", str(project))
    res = CliRunner().invoke(app, ["report", "--format", "md,csv", "-f", "latex", "--format", "html",
                                   "--out", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for key in ("table2", "table4-objectcxr", "table6-objectcxr", "table7"):
        for suffix in (".md", ".csv", ".tex", ".html"):
            assert (tmp_path / f"{key}{suffix}").is_file()
    for key in ("table8-objectcxr", "table9-objectcxr"):
        for suffix in (".md", ".csv", ".tex", ".html"):
            assert (tmp_path / f"{key}{suffix}").is_file()
    assert (tmp_path / "index.html").read_text().count("<table") == 6
    t4 = pd.read_csv(tmp_path / "table4-objectcxr.csv", index_col="label")
    assert t4.loc["Grad-CAM", "objectcxr/resnet34/trained/pg_mean"] == pytest.approx(0.83)  # "new", not "old"
    assert t4.loc["centre peak", "objectcxr/resnet34/trained/pg_mean"] == pytest.approx(0.25)
    assert t4.loc["τ (input pixels)", "objectcxr/resnet34/trained/pg_mean"] == pytest.approx(3.2)
    page = (tmp_path / "index.html").read_text()
    assert page.count("<th>chance (uniform peak)</th>") == 3  # Tables 2, 4 and 6
    assert "Pointing Game τ on Object-CXR: 3.2 input pixels (15 px at an input of 600 px, scaled to the study&#x27;s " \
           "128 px input)" in page


def test_report_can_pick_an_older_study_and_names_an_unknown_one(project, tmp_path, monkeypatch):
    monkeypatch.setenv("XIQA_PROJECT", str(project))
    res = CliRunner().invoke(app, ["report", "-f", "csv", "--study", "old", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    t4 = pd.read_csv(tmp_path / "table4-objectcxr.csv", index_col="label")
    assert t4.loc["Grad-CAM", "objectcxr/resnet34/trained/pg_mean"] == pytest.approx(0.33)
    bad = CliRunner().invoke(app, ["report", "--study", "nope", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "no run of study 'nope'" in bad.output
    fmt = CliRunner().invoke(app, ["report", "--format", "pdf", "--out", str(tmp_path)])
    assert fmt.exit_code == 2 and "pdf" in fmt.output
