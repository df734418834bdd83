"""The whole study through `dvc repro` on a tiny grid, in a throw-away git + DVC repository.

One test on purpose (every `dvc repro` costs a few dozen Python start-ups): it builds the grid
(Object-CXR phantoms, ResNet-34 and EfficientNet-B0, seeds 1 and 2, trained / SR / FR) and checks

1. every table has every method row and every condition column, SR shows its skip reason; the
   report draws the README's overlay figure (`reports/figures/overlay-objectcxr.png`);
2. every aggregate mean ± std equals a recomputation from the evaluation runs' per-image CSV
   artifacts, and DoM equals the absolute difference of the logged means;
3. `dvc metrics show` and `dvc metrics diff` print the headline in at most 120 columns (a row
   per dataset × arch × number, a column per condition), `dvc plots show` one chart per dataset;
   a second report run over the same evaluations writes byte-identical tables, metrics and plots;
4. a repro after changing `evaluate.tolerance` or `evaluate.tolerance_at` re-runs only `evaluate`
   and `report`, and the tables show the new τ in input pixels;
5. one after shrinking the seed list re-runs each `train` process (one per cell, every seed of
   the grid) but no data stage, and no aggregate keeps the dropped seed;
6. one after changing `sanity.samples` re-runs only `sanity` and `report`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

try:
    from tests.conftest import BIN, run
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, run

from xiqa import schema as S

ARCHS = ("resnet34", "efficientnet_b0")
TINY = {
    "data": {"objectcxr": {"n_images": 24, "min_size": 64, "max_size": 72},
             "lvot": {"n_patients": 6, "slices_per_patient": 2, "size": 48}},
    "prepare": {"train": 0.5, "val": 0.25, "test": 0.25},
    "grid": {"models": [{"dataset": "objectcxr", "arch": a} for a in ARCHS], "seeds": [1, 2],
             "randomised": ["sr", "fr"]},
    "train": {"objectcxr": {"image_size": 48, "epochs": 1, "batch_size": 8, "pretrained": False,
                            "step_size": None, "augment": False}},
    "evaluate": {"batch_size": 8, "bootstrap": 50, "permutations": 20, "figure_samples": 1},
    "report": {"formats": ["md", "csv", "html"]},
    "pretrain": {"route": "none"},  # no start at all: SR is skipped, its reason said (the stand-in: test_pretrain.py)
}


def _ran(proc) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout))


def _store(root: Path):
    import mlflow

    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def _study_runs(root: Path) -> pd.DataFrame:
    import mlflow

    client = _store(root)
    exp = client.get_experiment_by_name(S.STUDY_EXPERIMENT)
    runs = mlflow.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    latest = runs[runs[f"tags.{S.KIND}"] == "aggregate"].iloc[0][f"tags.{S.STUDY}"]
    return runs[runs[f"tags.{S.STUDY}"] == latest]


def _per_image(root: Path, arch: str, cond: str, seed: int, tmp: Path) -> pd.DataFrame:
    import mlflow

    pointer = json.loads((root / "eval" / f"objectcxr-{arch}" / f"{cond}-s{seed}.json").read_text())
    dst = tmp / f"{arch}-{cond}-{seed}"
    dst.mkdir(exist_ok=True)
    return pd.read_csv(mlflow.artifacts.download_artifacts(run_id=pointer["run_id"], artifact_path="per_image.csv",
                                                           dst_path=str(dst)))


def _outputs(root: Path, reports: str) -> dict[str, bytes]:
    """The report stage's tables (``reports``: md, csv, tex) and full metric sets, DVC metrics and
    plots, by name."""
    files = [p for ext in ("md", "csv", "tex") for p in (root / reports).glob(f"table*.{ext}")]
    files += list((root / reports / "metrics").glob("*.json"))
    files += list((root / "metrics").rglob("*.json")) + list((root / "plots").glob("*.csv"))
    return {str(p.relative_to(root)).replace(reports, "<reports>", 1): p.read_bytes() for p in files}


def _check_aggregates(root: Path, seeds: list[int], tmp: Path) -> pd.DataFrame:
    runs = _study_runs(root)
    aggs = runs[runs[f"tags.{S.KIND}"] == "aggregate"]
    for arch in ARCHS:
        for cond in ("trained", "fr"):
            row = aggs[(aggs["tags.arch"] == arch) & (aggs["tags.condition"] == cond)].iloc[0]
            assert row["tags.seeds"] == ",".join(map(str, seeds))
            frames = [_per_image(root, arch, cond, s, tmp) for s in seeds]
            for m in S.METHODS:
                for smoothed in (True, False):
                    accs = [f[(f.method == m) & (f.smoothed == int(smoothed))]["hit"].mean() for f in frames]
                    mean = sum(accs) / len(accs)
                    assert row[f"metrics.{S.agg_metric('mean', m, smoothed)}"] == pytest.approx(mean)
                    std_col = f"metrics.{S.agg_metric('std', m, smoothed)}"
                    if len(accs) > 1:
                        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))
                        assert row[std_col] == pytest.approx(std)
                    else:
                        assert std_col not in row or pd.isna(row[std_col])
        sr = aggs[(aggs["tags.arch"] == arch) & (aggs["tags.condition"] == "sr")].iloc[0]
        assert sr[f"tags.{S.STATUS}"] == "skipped"
    study = runs[runs[f"tags.{S.KIND}"] == "study"].iloc[0]
    a, b = (aggs[(aggs["tags.arch"] == x) & (aggs["tags.condition"] == "trained")].iloc[0] for x in ARCHS)
    for m in S.METHODS:
        dom = abs(a[f"metrics.pg_mean/{m}"] - b[f"metrics.pg_mean/{m}"])
        assert study[f"metrics.dom/{m}"] == pytest.approx(dom, abs=1e-12)
        assert 0 < study[f"metrics.mmd_p/{m}"] <= 1
    return aggs


@pytest.mark.slow
def test_study_runs_end_to_end_with_dvc_repro(make_project, tmp_path):
    root = make_project(TINY)
    dvc = str(BIN / "dvc")
    first = run(root, dvc, "repro", "report")
    assert "report" in _ran(first)
    assert sum(s.startswith("evaluate") for s in _ran(first)) == 2  # one process per arch
    assert sum(s.startswith("sanity") for s in _ran(first)) == 2

    # 1. tables: every method row, the baselines and tau, every condition column; SR's reason
    # instead of numbers
    labels = [S.method_label(m) for m in S.METHODS]
    extra = [S.BASELINE_LABELS[b] for b in S.BASELINES] + [S.TAU_LABEL]
    t4 = pd.read_csv(root / "reports" / "table4-objectcxr.csv", index_col="label")
    assert list(t4.index) == labels + extra
    assert t4.loc[S.TAU_LABEL, "objectcxr/resnet34/trained/pg_mean"] == 15 * 48 / 600  # the paper's tau at 48 px
    for arch in ("resnet34", "efficientnet_b0"):  # columns named as the metric keys
        for cond in ("fr", "trained"):
            assert t4[f"objectcxr/{arch}/{cond}/pg_mean"].notna().all()
        assert t4[f"objectcxr/{arch}/sr/pg_note"].str.startswith("skipped:").all()
    t2 = pd.read_csv(root / "reports" / "table2.csv", index_col="label")
    assert list(t2.index) == labels + extra and t2.filter(like="/pg_raw_mean").shape[1] == 2
    t6 = pd.read_csv(root / "reports" / "table6-objectcxr.csv", index_col="label")
    assert list(t6.index) == labels + extra and t6.loc[labels, "objectcxr/resnet34~efficientnet_b0/dom"].notna().all()  # no DoM of a baseline
    t7 = pd.read_csv(root / "reports" / "table7.csv", index_col="label")
    assert t7["test_accuracy_mean"].between(0, 1).all() and t7["test_auc_mean"].notna().all()
    md = (root / "reports" / "table4-objectcxr.md").read_text()
    assert all(f"| {label} |" in md for label in labels)
    page = (root / "reports" / "index.html").read_text()
    assert page.count("<table") == 6 and "data:image/png;base64," in page  # Tables 2, 4, 6, 7, 8, 9
    # the README's picture (xiqa/report/overlay.py): a test scan under the first arch's trained seed-1 maps
    from PIL import Image

    with Image.open(root / "reports" / "figures" / "overlay-objectcxr.png") as png:
        assert png.width > 2 * png.height > 300  # one row of four panels
    assert "one test scan with its expert box" in page
    t8 = pd.read_csv(root / "reports" / "table8-objectcxr.csv", index_col="label")
    assert list(t8.index) == labels + [S.LOC_BASELINE_LABELS[b] for b in S.LOC_BASELINES]
    assert t8.loc["uniform map", "objectcxr/resnet34/trained/auc_mean"] == pytest.approx(0.5, abs=1e-12)
    t9 = pd.read_csv(root / "reports" / "table9-objectcxr.csv", index_col="label")
    assert list(t9.index) == labels
    assert (root / "sanity" / "objectcxr-resnet34" / "trained-s2.json").is_file()
    csv4 = pd.read_csv(root / "reports" / "table4-objectcxr.csv", index_col="method")  # ids as in the metric keys
    assert list(csv4.index) == list(S.METHODS) + [f"baseline_{b}" for b in S.BASELINES] + [S.TAU]

    # 1b. the same evaluations, the same report: a second report run (a new study) writes
    # byte-identical tables, DVC metrics and plots
    before = _outputs(root, "reports")
    assert len(before) > 20
    run(root, str(BIN / "python"), "-m", "pipelines.report", "--out", "reports-again")
    assert _outputs(root, "reports-again") == before
    shutil.rmtree(root / "reports-again")

    # 2. aggregates = recomputation from the per-image CSV artifacts; DoM = |difference of means|
    aggs = _check_aggregates(root, [1, 2], tmp_path)
    assert t4.loc["Grad-CAM", "objectcxr/resnet34/trained/pg_mean"] == pytest.approx(
        aggs[(aggs["tags.arch"] == "resnet34") & (aggs["tags.condition"] == "trained")].iloc[0]["metrics.pg_mean/gradcam"],
        abs=1e-9)

    # 3. DVC metrics (the headline, 120 columns wide) and plots (one chart per dataset)
    shown = run(root, dvc, "metrics", "show").stdout
    assert max(len(line) for line in shown.splitlines()) <= 120, shown
    rows = {line.split()[0]: line.split()[1:] for line in shown.splitlines()}
    assert rows.pop("Path") == ["fr", "trained"]  # SR skipped everywhere: no number (Table 4 says why)
    assert sorted(rows) == sorted(f"metrics/objectcxr-{a}/{k}.json" for a in ARCHS for k in
                                  [f"pg_mean/{m}" for m in S.METHODS] + ["test_accuracy_mean", "test_auc_mean"])
    trained = aggs[(aggs["tags.arch"] == "resnet34") & (aggs["tags.condition"] == "trained")].iloc[0]
    fr, value = rows["metrics/objectcxr-resnet34/pg_mean/gradcam.json"]
    assert 0 <= float(fr) <= 1 and float(value) == pytest.approx(trained["metrics.pg_mean/gradcam"], abs=1e-5)
    assert float(rows["metrics/objectcxr-resnet34/test_auc_mean.json"][1]) == pytest.approx(
        trained["metrics.test_auc_mean"], abs=1e-5)
    plots = json.loads(run(root, dvc, "plots", "show", "--json").stdout)["data"]
    assert list(plots) == ["plots/pg-objectcxr.csv"]
    run(root, dvc, "plots", "show", "-o", str(tmp_path / "dvc_plots"))
    assert (tmp_path / "dvc_plots" / "index.html").is_file()
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "the first study")  # what `dvc metrics diff` compares against

    # 4. a new tolerance re-runs exactly the evaluations and the report (not train / randomise /
    # prepare)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluate"]["tolerance"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran(run(root, dvc, "repro", "report"))
    assert ran == {"report", "evaluate@0", "evaluate@1"}  # one evaluate process per arch
    diff = run(root, dvc, "metrics", "diff", "--all").stdout  # a row per file x condition
    assert max(len(line) for line in diff.splitlines()) <= 120, diff
    assert len(diff.splitlines()) == 1 + len(rows) * 2  # fr and trained: SR is skipped
    # ... and so does the input size it holds at; the new tau (in input pixels) is what is logged
    params["evaluate"]["tolerance_at"]["objectcxr"] = 96
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran(run(root, dvc, "repro", "report"))
    assert ran == {"report", "evaluate@0", "evaluate@1"}
    pointer = json.loads((root / "eval" / "objectcxr-resnet34" / "trained-s1.json").read_text())
    assert pointer["tau_px"] == 5 * 48 / 96
    t4 = pd.read_csv(root / "reports" / "table4-objectcxr.csv", index_col="label")
    assert t4.loc[S.TAU_LABEL, "objectcxr/resnet34/trained/pg_mean"] == 2.5

    # 5. fewer seeds: no aggregate keeps the dropped seed's models (the train and randomise
    # stages re-run: one process per cell makes one pointer per grid seed; seed 1 retrains to the
    # same weights, tests/pipelines/test_train_randomise.py)
    params["grid"]["seeds"] = [1]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran(run(root, dvc, "repro", "report"))
    assert {"report", "train@0", "train@1"} <= ran and not any(s.startswith(("prepare", "data")) for s in ran)
    assert sorted(p.name for p in (root / "models" / "objectcxr-resnet34" / "trained").iterdir()) == ["s1.json"]
    assert sorted(p.name for p in (root / "eval" / "objectcxr-resnet34").iterdir()) == [
        "fr-s1.json", "sr-s1.json", "trained-s1.json"]  # DVC cleared the dropped seed's output
    assert sorted(p.name for p in (root / "models" / "objectcxr-resnet34" / "fr").iterdir()) == ["s1.json"]
    _check_aggregates(root, [1], tmp_path)
    t4_after = pd.read_csv(root / "reports" / "table4-objectcxr.csv", index_col="label")
    std_cols = [c for c in t4_after.columns if c.endswith("/pg_std")]
    assert std_cols and t4_after[std_cols].isna().all().all()  # one seed: no std (ddof = 1), not 0

    # 6. the sanity checks' parameters re-run only them and the report
    params["sanity"]["samples"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran(run(root, dvc, "repro", "report"))
    assert ran == {"report", "sanity@0", "sanity@1"}
    assert len(json.loads((root / "sanity" / "objectcxr-resnet34" / "trained-s1.json").read_text())["images"]) == 1
