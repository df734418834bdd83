"""The evaluate and report stages log τ in input pixels and the no-information baselines.

Real stages, run in-process on a tiny Object-CXR project with the embedded sqlite store (no
DVC: `test_study_e2e` covers the pipeline): data → prepare → train (seed 1) and randomise (SR
skipped, FR seed 1) → evaluate → report. Then the evaluation JSON, the evaluation and aggregate
runs and the exported tables are checked against an independent recomputation of τ and of the
baselines from `boxes.csv`, by plain loops over every pixel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

try:
    from tests.conftest import REPO
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import REPO

from xiqa.report import schema as S

SIZE = 48
AT = 150  # evaluate.tolerance_at.objectcxr: tau = 15 * 48 / 150 = 4.8 input pixels
ARCH = "resnet34"
PARAMS = {
    "data": {"objectcxr": {"n_images": 24, "min_size": 64, "max_size": 72}},
    "prepare": {"train": 0.5, "val": 0.25, "test": 0.25},
    "grid": {"models": [{"dataset": "objectcxr", "arch": ARCH}], "seeds": [1], "randomised": ["sr", "fr"]},
    "train": {"objectcxr": {"image_size": SIZE, "epochs": 1, "batch_size": 8, "pretrained": False,
                            "step_size": None, "augment": False, "bn_recalibration": 0}},
    "evaluate": {"tolerance": 15, "tolerance_at": {"objectcxr": AT}, "batch_size": 8, "bootstrap": 50,
                 "permutations": 10, "figure_samples": 0,
                 "methods": ["gradcam", "input_x_gradient"]},
    "sanity": {"samples": 2, "seed": 0},
    "report": {"formats": ["md", "csv", "latex", "html"]},
}


def _stage(module: str, *args: str) -> str:
    import importlib

    app = importlib.import_module(f"pipelines.{module}").app
    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    import mlflow

    root = tmp_path_factory.mktemp("evaluate")
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in PARAMS.items():  # replace whole stage sections that the test sets
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    (root / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    mp = pytest.MonkeyPatch()
    mp.setenv("XIQA_PROJECT", str(root))
    try:
        _stage("data", "--dataset", "objectcxr", "--no-progress")
        _stage("prepare", "--dataset", "objectcxr")
        _stage("train", "--dataset", "objectcxr", "--arch", ARCH, "--seed", "1")
        for cond in ("sr", "fr"):
            _stage("randomise", "--dataset", "objectcxr", "--arch", ARCH, "--condition", cond)
        out = _stage("evaluate", "--dataset", "objectcxr", "--arch", ARCH)
        assert "at tau 4.8 input px" in out
        _stage("sanity", "--dataset", "objectcxr", "--arch", ARCH)
        _stage("report", "--out", str(root / "reports"))
    finally:
        mp.undo()
        mlflow.set_tracking_uri("")
    return root


def _expected_baselines(root: Path) -> pd.DataFrame:
    """Independent: the test images' boxes scaled to 48 px by plain maths, then every pixel."""
    prepared = root / "data" / "prepared" / "objectcxr"
    splits = pd.read_csv(prepared / "splits.csv")
    images = pd.read_csv(prepared / "images.csv").set_index("image_id")
    boxes = pd.read_csv(prepared / "boxes.csv")
    test = set(splits.loc[splits["split"] == "test", "image_id"])
    tau = 15 * SIZE / AT
    rows = []
    for image_id, group in boxes[boxes["image_id"].isin(test)].groupby("image_id"):
        w, h = images.loc[image_id, ["width", "height"]]
        scaled = [(int(np.floor(x0 * SIZE / w)), int(np.floor(y0 * SIZE / h)),
                   min(SIZE - 1, int(np.ceil((x1 + 1) * SIZE / w)) - 1), min(SIZE - 1, int(np.ceil((y1 + 1) * SIZE / h)) - 1))
                  for x0, y0, x1, y1 in group[["x0", "y0", "x1", "y1"]].round().astype(int).itertuples(index=False)]

        def hit(u: int, v: int, scaled=scaled) -> bool:
            return any(max(x0 - u, 0, u - x1) ** 2 + max(y0 - v, 0, v - y1) ** 2 < tau ** 2
                       for x0, y0, x1, y1 in scaled)

        chance = sum(hit(u, v) for u in range(SIZE) for v in range(SIZE)) / SIZE ** 2
        rows.append({"image_id": image_id, "chance": chance, "centre": int(hit(23, 23))})
    return pd.DataFrame(rows).set_index("image_id").sort_index()


def test_evaluation_json_and_run_log_tau_and_the_baselines(study):
    import mlflow

    expected = _expected_baselines(study)
    assert len(expected) > 0
    client = mlflow.MlflowClient(f"sqlite:///{(study / 'mlflow.db').as_posix()}")
    for cond in ("trained", "fr"):
        pointer = json.loads((study / "eval" / f"objectcxr-{ARCH}" / f"{cond}-s1.json").read_text())
        assert (pointer[S.TAU], pointer["tolerance"], pointer["tolerance_at"], pointer["image_size"]) == (4.8, 15, AT, SIZE)
        assert pointer["n_images"] == len(expected)
        run = client.get_run(pointer["run_id"])
        assert run.data.params[S.TAU] == "4.8" and run.data.params["tolerance_at"] == str(AT)
        assert run.data.metrics[S.TAU] == 4.8
        dst = study / f"artifacts-{cond}"
        dst.mkdir()
        got = pd.read_csv(client.download_artifacts(pointer["run_id"], "baselines.csv", str(dst)))
        assert list(got.columns) == list(S.BASELINE_COLUMNS)
        got = got.set_index("image_id").sort_index()
        assert list(got.index) == list(expected.index)
        assert got["chance"].tolist() == pytest.approx(expected["chance"].tolist(), abs=1e-15)  # CSV round trip
        assert got["centre"].tolist() == expected["centre"].tolist()
        for b in S.BASELINES:
            assert run.data.metrics[S.baseline_metric(b)] == pytest.approx(expected[b].mean(), abs=1e-12)
            assert pointer["baselines"][b] == round(run.data.metrics[S.baseline_metric(b)], 6)


def test_aggregate_runs_and_every_table_format_show_tau_and_the_baselines(study):
    import mlflow

    expected = _expected_baselines(study)
    client = mlflow.MlflowClient(f"sqlite:///{(study / 'mlflow.db').as_posix()}")
    exp = client.get_experiment_by_name(S.STUDY_EXPERIMENT)
    aggs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(S.KIND) == "aggregate"]
    done = {r.data.tags["condition"]: r for r in aggs if r.data.tags.get(S.STATUS) != "skipped"}
    assert set(done) == {"trained", "fr"}
    for run in done.values():
        m = run.data.metrics
        assert m[S.TAU] == 4.8 and run.data.params[S.TAU] == "4.8"
        for b in S.BASELINES:
            assert m[S.agg_baseline_metric("mean", b)] == pytest.approx(expected[b].mean(), abs=1e-12)
            assert m[S.agg_baseline_metric("ci_low", b)] <= m[S.agg_baseline_metric("mean", b)] \
                <= m[S.agg_baseline_metric("ci_high", b)]
    pg = json.loads((study / "metrics" / "pointing_game.json").read_text())["objectcxr"][ARCH]["trained"]
    assert pg[S.TAU] == 4.8 and pg["baseline_centre"]["mean"] == round(expected["centre"].mean(), 6)
    plot = pd.read_csv(study / "plots" / f"pg-objectcxr-{ARCH}-trained.csv")
    assert plot["method"].tolist()[-2:] == ["baseline_chance", "baseline_centre"]

    reports = study / "reports"
    for key in ("table2", "table4-objectcxr", "table6-objectcxr"):
        csv = pd.read_csv(reports / f"{key}.csv", index_col=0)
        col = next(c for c in csv.columns if c.endswith(" mean") and "SR" not in c)
        assert csv.loc["chance (uniform peak)", col] == pytest.approx(expected["chance"].mean(), abs=1e-12)
        assert csv.loc["centre peak", col] == pytest.approx(expected["centre"].mean(), abs=1e-12)
        assert csv.loc["τ (input pixels)", col] == 4.8
        note = f"Pointing Game τ on Object-CXR: 4.8 input pixels (15 px at an input of {AT} px, scaled to the study's {SIZE} px input)"
        assert note in (reports / f"{key}.md").read_text()
        assert "| centre peak |" in (reports / f"{key}.md").read_text()
        tex = (reports / f"{key}.tex").read_text()
        assert r"Pointing Game $\tau$ on Object-CXR: 4.8 input pixels" in tex and "chance (uniform peak) & " in tex
        html = (reports / f"{key}.html").read_text()
        assert "<th>chance (uniform peak)</th>" in html and "4.8 input pixels" in html
