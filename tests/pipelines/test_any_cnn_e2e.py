"""Issue 26 end to end: a tiny grid of an architecture xiqa has no preset for (MobileNetV3-Small:
derived layers, Hardswish, so Guided Backprop is not applicable) through `dvc repro`, then
`xiqa audit` of two classifiers logged by plain `mlflow.pytorch` code (MLflow's `pickle` and
its default `pt2` format) on the same prepared dataset, and `xiqa report` showing them beside the
study's model.

One project, one `dvc repro report` (1 seed, FR only, one epoch at 64 px), so the slow parts run once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

try:
    from tests.conftest import BIN, REPO, deep_merge, run
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, REPO, deep_merge, run

from xiqa import schema as S

ARCH = "mobilenet_v3_small"
SIZE = 64
TINY = {
    "data": {"objectcxr": {"n_images": 24, "min_size": 64, "max_size": 72},
             "lvot": {"n_patients": 4, "slices_per_patient": 2, "size": 48}},
    "prepare": {"train": 0.5, "val": 0.25, "test": 0.25},
    "grid": {"models": [{"dataset": "objectcxr", "arch": ARCH}], "seeds": [1], "randomised": ["fr"],
             "archs": [ARCH]},
    "pretrain": {"route": "none"},  # trained from scratch, no SR: the pretrain stage only says so
    "train": {"objectcxr": {"image_size": SIZE, "epochs": 1, "batch_size": 8, "pretrained": False,
                            "step_size": None, "augment": False}},
    "evaluate": {"batch_size": 8, "bootstrap": 20, "permutations": 10, "figure_samples": 1},
    "sanity": {"samples": 2},
    "report": {"formats": ["md", "csv"]},
}
GUIDED = ("guided_backprop", "guided_gradcam")


class TinyCNN(nn.Module):
    """Somebody's own two-stage CNN with one input channel and the positive logit first."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The tiny grid's project after `dvc repro report` (module-scoped: built once)."""
    root = tmp_path_factory.mktemp("anycnn") / "project"
    root.mkdir()
    for item in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(REPO / item, root / item)
    for folder in ("xiqa", "pipelines"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(defaults, TINY), sort_keys=False))
    run(root, "git", "init", "-q")
    run(root, str(BIN / "dvc"), "init", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "init")
    run(root, str(BIN / "dvc"), "repro", "report")
    return root


def _store(root: Path):
    import mlflow

    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


@pytest.mark.slow
def test_a_grid_of_a_derived_architecture_runs_through_dvc_repro_and_notes_guided_backprop(project: Path) -> None:
    for cond in ("trained", "fr"):
        pointer = json.loads((project / "eval" / f"objectcxr-{ARCH}" / f"{cond}-s1.json").read_text())
        assert set(pointer["not_applicable"]) == set(GUIDED)
        assert all("Hardswish" in why for why in pointer["not_applicable"].values())
        assert set(pointer["pg_smooth"]) == set(S.METHODS) - set(GUIDED)
    sanity = json.loads((project / "sanity" / f"objectcxr-{ARCH}" / "trained-s1.json").read_text())
    assert sanity["final_step"] == 8  # the derived cascade: classifier + 7 stages
    # Table 4 (SR / FR / trained): the guided methods are rows, noted as not applicable
    frame = pd.read_csv(project / "reports" / "table4-objectcxr.csv").set_index("method")
    for m in GUIDED:
        notes = [str(v) for k, v in frame.loc[m].items() if str(k).endswith("/trained/pg_note")]
        assert notes and "not applicable" in notes[0] and "Hardswish" in notes[0]
    md = (project / "reports" / "table4-objectcxr.md").read_text()
    assert "| Guided Backprop | – | n/a | n/a |" in md  # SR skipped (its column says so), GBP not applicable


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pickle", "pt2"])
def test_xiqa_audit_of_a_model_logged_by_plain_mlflow_pytorch(project: Path, fmt: str, monkeypatch) -> None:
    import mlflow
    import mlflow.pytorch

    from xiqa.cli import app

    client = _store(project)
    torch.manual_seed(0)
    model = TinyCNN().eval()
    name = f"somebody-{fmt}"
    mlflow.set_experiment("somebody")
    with mlflow.start_run():
        if fmt == "pickle":
            info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle")
        else:  # MLflow 3's default: an exported program, traced on the input example
            info = mlflow.pytorch.log_model(model, name="model", input_example=torch.randn(2, 1, 40, 40).numpy())
    mv = mlflow.register_model(info.model_uri, name)
    mlflow.set_tracking_uri("")
    monkeypatch.setenv("XIQA_PROJECT", str(project))
    runner = CliRunner()
    res = runner.invoke(app, ["audit", f"models:/{name}/{mv.version}", "--dataset", "objectcxr"])
    assert res.exit_code == 2 and "input convention" in res.output and "--image-size" in res.output
    client.set_model_version_tag(name, mv.version, "image_size", "40")
    args = ["audit", f"{name}/{mv.version}", "--dataset", "objectcxr", "--channels", "1", "--mean", "0.5",
            "--std", "0.25", "--positive-class", "0", "--out", str(project / "audits")]
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((project / "audits" / f"{name}-v{mv.version}" / "evaluation.json").read_text())
    run_ = client.get_run(summary["run_id"])
    assert run_.data.tags["xiqa.audit"] == "true" and run_.data.tags["model_format"] == fmt
    assert run_.data.params["image_size"] == "40" and run_.data.tags["positive_class"] == "0"
    if fmt == "pt2":  # activations are graph operations, not modules: no guided rule can be hooked
        assert set(summary["not_applicable"]) == set(GUIDED)
        assert "the sanity checks cannot run" in res.output and "pt2" in res.output
    else:
        assert summary["not_applicable"] == {}
        assert (project / "audits" / f"{name}-v{mv.version}" / "sanity.json").is_file()
    res = runner.invoke(app, ["report", "--out", str(project / f"audit-report-{fmt}"), "--format", "md"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    header = (project / f"audit-report-{fmt}" / "table4-objectcxr.md").read_text().splitlines()[2]
    assert f"{ARCH} · Trained" in header and f"{name}/v{mv.version} · Trained" in header
