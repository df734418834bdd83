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

from xiqa import schema as S

SIZE = 48
AT = 150  # evaluate.tolerance_at.objectcxr: tau = 15 * 48 / 150 = 4.8 input pixels
ARCH = "resnet34"
PARAMS = {
    "data": {"objectcxr": {"n_images": 24, "min_size": 64, "max_size": 72}},
    "prepare": {"train": 0.5, "val": 0.25, "test": 0.25},
    "grid": {"models": [{"dataset": "objectcxr", "arch": ARCH}], "seeds": [1], "randomised": ["sr", "fr"],
             "archs": [ARCH]},
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
    pg = json.loads((study / "reports" / "metrics" / "pointing_game.json").read_text())["objectcxr"][ARCH]["trained"]
    assert pg[S.TAU] == 4.8 and pg["baseline_centre"]["mean"] == round(expected["centre"].mean(), 6)
    plot = pd.read_csv(study / "plots" / "pg-objectcxr.csv")
    plot = plot[(plot["arch"] == ARCH) & (plot["condition"] == "trained")]
    assert plot["method"].tolist()[-2:] == ["baseline_chance", "baseline_centre"]
    assert plot["pg_mean"].tolist()[-1] == pg["baseline_centre"]["mean"]
    # the DVC metrics: the headline of the full set
    headline = json.loads((study / "metrics" / f"objectcxr-{ARCH}" / "pg_mean" / "gradcam.json").read_text())
    assert headline["trained"] == pg["gradcam"]["mean"]

    reports = study / "reports"
    for key in ("table2", "table4-objectcxr", "table6-objectcxr"):
        csv = pd.read_csv(reports / f"{key}.csv", index_col=0)
        col = next(c for c in csv.columns if c.endswith("/pg_mean") and "/sr/" not in c)
        # rows by their stable ids (the CSV's first column), labels beside them
        assert csv.loc["baseline_chance", "label"] == "chance (uniform peak)"
        assert csv.loc["baseline_chance", col] == pytest.approx(expected["chance"].mean(), abs=1e-12)
        assert csv.loc["baseline_centre", col] == pytest.approx(expected["centre"].mean(), abs=1e-12)
        assert csv.loc["tau_px", col] == 4.8
        note = f"Pointing Game τ on Object-CXR: 4.8 input pixels (15 px at an input of {AT} px, scaled to the study's {SIZE} px input)"
        assert note in (reports / f"{key}.md").read_text()
        assert "| centre peak |" in (reports / f"{key}.md").read_text()
        tex = (reports / f"{key}.tex").read_text()
        assert r"Pointing Game $\tau$ on Object-CXR: 4.8 input pixels" in tex and "chance (uniform peak) & " in tex
        html = (reports / f"{key}.html").read_text()
        assert "<th>chance (uniform peak)</th>" in html and "4.8 input pixels" in html


# --------------------------------------------------------------------------- localisation (SPEC 6.1)
def _client(root: Path):
    import mlflow

    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def _masks_by_loops(root: Path) -> dict[str, np.ndarray]:
    """Independent: each test image's boxes scaled to 48 px (plain maths), then every pixel."""
    prepared = root / "data" / "prepared" / "objectcxr"
    images = pd.read_csv(prepared / "images.csv").set_index("image_id")
    boxes = pd.read_csv(prepared / "boxes.csv")
    out = {}
    for image_id, group in boxes.groupby("image_id"):
        w, h = images.loc[image_id, ["width", "height"]]
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        for x0, y0, x1, y1 in group[["x0", "y0", "x1", "y1"]].round().astype(int).itertuples(index=False):
            sx0, sy0 = int(np.floor(x0 * SIZE / w)), int(np.floor(y0 * SIZE / h))
            sx1 = min(SIZE - 1, int(np.ceil((x1 + 1) * SIZE / w)) - 1)
            sy1 = min(SIZE - 1, int(np.ceil((y1 + 1) * SIZE / h)) - 1)
            for v in range(SIZE):
                for u in range(SIZE):
                    if sx0 <= u <= sx1 and sy0 <= v <= sy1:
                        mask[v, u] = True
        out[image_id] = mask
    return out


def test_per_image_localisation_equals_the_metrics_recomputed_from_the_maps_and_the_run_logs_their_means(study):
    import torch

    from xiqa import saliency
    from xiqa.data.dataset import load_split
    from xiqa.evaluation import localisation as loc
    from xiqa.tracking import lookup

    client = _client(study)
    masks = _masks_by_loops(study)
    pointer = json.loads((study / "eval" / f"objectcxr-{ARCH}" / "trained-s1.json").read_text())
    run = client.get_run(pointer["run_id"])
    dst = study / "artifacts-loc"
    dst.mkdir()
    per_image = pd.read_csv(client.download_artifacts(pointer["run_id"], "per_image.csv", str(dst)))
    assert list(per_image.columns) == list(S.PER_IMAGE_COLUMNS)
    # the maps again, exactly as evaluate makes them (same model, images, batches of 8)
    model = lookup.load_model(pointer["model_uri"])
    split = load_split(study, "objectcxr", "test", SIZE)
    rows = [i for i, image_id in enumerate(split.ids) if image_id in masks]
    methods = PARAMS["evaluate"]["methods"]
    expected = []
    for start in range(0, len(rows), 8):
        batch = rows[start:start + 8]
        raw = saliency.explain(model, split.inputs(torch.tensor(batch)), methods, arch=ARCH)
        ids = [split.ids[i] for i in batch]
        mask = torch.from_numpy(np.stack([masks[i] for i in ids]))
        for smoothed in (0, 1):
            for m in methods:
                maps = saliency.smooth(raw[m].detach()) if smoothed else raw[m].detach()
                got = loc.scores(maps, mask).as_dict()
                expected += [{"image_id": i, "method": m, "smoothed": smoothed, **{k: float(got[k][j]) for k in got}}
                             for j, i in enumerate(ids)]
    expected = pd.DataFrame(expected).set_index(["image_id", "method", "smoothed"]).sort_index()
    logged = per_image.set_index(["image_id", "method", "smoothed"]).sort_index()
    assert list(logged.index) == list(expected.index)
    for k in S.LOC_METRICS:
        # same maps, same float64 sums: equal up to the CSV round trip (repr: exact)
        np.testing.assert_allclose(logged[k].to_numpy(), expected[k].to_numpy(), rtol=0, atol=0, equal_nan=True)
        assert logged[k].notna().any()
        for m in methods:
            for smoothed in (False, True):
                values = logged.xs((m, int(smoothed)), level=("method", "smoothed"))[k].dropna()
                assert run.data.metrics[S.loc_metric(k, m, smoothed)] == pytest.approx(values.mean(), rel=1e-12)
    # the baselines: the uniform map scores the box area fraction (top-k capped at |box| / k)
    area = pd.Series({i: m.mean() for i, m in masks.items()}).loc[sorted(set(per_image["image_id"]))]
    k_pix = loc.topk_count(SIZE * SIZE)
    boxes_px = area * SIZE * SIZE
    assert run.data.metrics[S.loc_baseline_metric("mass", "uniform")] == pytest.approx(area.mean(), rel=1e-12)
    assert run.data.metrics[S.loc_baseline_metric("rank", "uniform")] == pytest.approx(area.mean(), rel=1e-12)
    assert run.data.metrics[S.loc_baseline_metric("auc", "uniform")] == pytest.approx(0.5, rel=1e-12)
    assert run.data.metrics[S.loc_baseline_metric("topk", "uniform")] == pytest.approx(
        np.minimum(area, boxes_px / k_pix).mean(), rel=1e-12)
    assert 0.0 <= run.data.metrics[S.loc_baseline_metric("mass", "centre_gaussian")] <= 1.0


def test_aggregate_runs_and_table8_carry_the_localisation_metrics_and_their_baselines(study):
    client = _client(study)
    exp = client.get_experiment_by_name(S.STUDY_EXPERIMENT)
    aggs = {r.data.tags["condition"]: r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get(S.KIND) == "aggregate" and r.data.tags.get(S.STATUS) != "skipped"}
    evaluation = client.get_run(json.loads((study / "eval" / f"objectcxr-{ARCH}" / "trained-s1.json").read_text())["run_id"])
    m = aggs["trained"].data.metrics
    for k in S.LOC_METRICS:
        for method in PARAMS["evaluate"]["methods"]:
            for smoothed in (True, False):
                mean = S.loc_agg_metric(k, "mean", method, smoothed)
                if mean not in m:  # every map constant: nothing to average
                    continue
                # one seed: the aggregate mean is the evaluation run's mean, and has no std
                assert m[mean] == pytest.approx(evaluation.data.metrics[S.loc_metric(k, method, smoothed)], rel=1e-12)
                assert S.loc_agg_metric(k, "std", method, smoothed) not in m
                assert m[S.loc_agg_metric(k, "ci_low", method, smoothed)] <= m[mean] \
                    <= m[S.loc_agg_metric(k, "ci_high", method, smoothed)]
        for b in S.LOC_BASELINES:
            assert m[S.loc_agg_baseline_metric(k, "mean", b)] == pytest.approx(
                evaluation.data.metrics[S.loc_baseline_metric(k, b)], rel=1e-12)
    reports = study / "reports"
    csv = pd.read_csv(reports / "table8-objectcxr.csv", index_col=0)
    col = f"objectcxr/{ARCH}/trained/mass_mean"
    assert csv.loc["baseline_uniform", "label"] == "uniform map"
    assert csv.loc["baseline_uniform", col] == pytest.approx(m[S.loc_agg_baseline_metric("mass", "mean", "uniform")], abs=1e-12)
    assert csv.loc["baseline_centre_gaussian", f"objectcxr/{ARCH}/trained/auc_mean"] == pytest.approx(
        m[S.loc_agg_baseline_metric("auc", "mean", "centre_gaussian")], abs=1e-12)
    if S.loc_agg_metric("mass", "mean", "gradcam") in m:
        assert csv.loc["gradcam", col] == pytest.approx(m[S.loc_agg_metric("mass", "mean", "gradcam")], abs=1e-12)
    assert "Table 8 — localisation beyond the Pointing Game" in (reports / "table8-objectcxr.md").read_text()
    assert "| uniform map |" in (reports / "table8-objectcxr.md").read_text()
    assert "centre Gaussian map & " in (reports / "table8-objectcxr.tex").read_text()
    assert "<th>uniform map</th>" in (reports / "table8-objectcxr.html").read_text()
    assert 'id="table8-objectcxr"' in (reports / "index.html").read_text()
    loc_json = json.loads((study / "reports" / "metrics" / "localisation.json").read_text())["objectcxr"][ARCH]["trained"]
    assert loc_json["mass"]["baseline_uniform"]["mean"] == round(m[S.loc_agg_baseline_metric("mass", "mean", "uniform")], 6)


# --------------------------------------------------------------------------- sanity stage (SPEC 6.1)
def test_sanity_stage_logs_one_history_point_per_cascade_block_and_the_report_shows_table9_and_figure(study):
    from xiqa.models.zoo import cascade

    client = _client(study)
    summary = json.loads((study / "sanity" / f"objectcxr-{ARCH}" / "trained-s1.json").read_text())
    steps = len(cascade(ARCH))
    assert summary["final_step"] == steps and summary["blocks"][0] == "original" and len(summary["blocks"]) == steps + 1
    assert len(summary["images"]) == 2
    run = client.get_run(summary["run_id"])
    assert run.data.tags[S.KIND] == "sanity" and run.data.tags["seed"] == "1"
    dst = study / "artifacts-sanity"
    dst.mkdir()
    frame = pd.read_csv(client.download_artifacts(summary["run_id"], "mprt.csv", str(dst)))
    for m in PARAMS["evaluate"]["methods"]:
        history = client.get_metric_history(summary["run_id"], f"mprt_spearman/{m}")
        rows = frame[(frame["method"] == m) & ~frame["constant"]]
        means = rows.groupby("step")["spearman"].mean()
        assert sorted(p.step for p in history) == list(means.index)  # one point per step with a map
        assert {p.step: p.value for p in history} == pytest.approx(means.to_dict(), rel=1e-12)
        assert means.get(0, 1.0) == pytest.approx(1.0, abs=1e-12)  # the trained maps against themselves
        if summary["mprt"][m]["spearman"][steps] is not None:
            assert summary["mprt"][m]["spearman"][steps] == round(means[steps], 6)
    exp = client.get_experiment_by_name(S.STUDY_EXPERIMENT)
    trained = next(r for r in client.search_runs([exp.experiment_id])
                   if r.data.tags.get(S.KIND) == "aggregate" and r.data.tags.get("condition") == "trained")
    reports = study / "reports"
    t9 = pd.read_csv(reports / "table9-objectcxr.csv", index_col=0)
    for m in PARAMS["evaluate"]["methods"]:
        final = summary["mprt"][m]["spearman"][steps]
        key = S.sanity_metric("mprt_spearman_final", "mean", m)
        if final is None:
            assert key not in trained.data.metrics
            continue
        assert trained.data.metrics[key] == pytest.approx(final, abs=1e-6)
        full_set = json.loads((study / "reports" / "metrics" / "sanity.json").read_text())["objectcxr"][ARCH]
        assert full_set["mprt_spearman_final"][m]["mean"] == round(trained.data.metrics[key], 6)
        assert t9.loc[m, f"objectcxr/{ARCH}/trained/mprt_spearman_final_mean"] == \
            pytest.approx(final, abs=1e-6)
    md = (reports / "table9-objectcxr.md").read_text()
    failing = [S.method_label(m) for m in PARAMS["evaluate"]["methods"]
               if (summary["mprt"][m]["spearman"][steps] or -1) > S.MPRT_PASS_THRESHOLD]
    assert f"(fail the MPRT): {', '.join(failing) or 'none'}." in md
    assert (reports / "table9-objectcxr.tex").is_file() and (reports / "table9-objectcxr.html").is_file()
    assert (reports / "figures" / "sanity-objectcxr.png").stat().st_size > 0
    assert "model-parameter randomisation test" in (reports / "index.html").read_text()
