"""Interrupted stages, then `dvc repro` again, against the team tracking server (PostgreSQL,
served artifacts, basic auth; MLFLOW_TRACKING_URI and the login in the environment, nothing
else changed): a throw-away git + DVC project, one Object-CXR cell (ResNet-34, seed 1, FR).

One test on purpose (every stage is a Python start with torch and MLflow). In order:
1. SIGKILL in the middle of a training epoch: MLflow is left with a RUNNING run (nobody ended
   it), nothing is registered, no pointer is written;
2. `dvc repro` trains again; that start marks the orphaned run KILLED;
3. SIGTERM in the middle of an evaluation: exit 143 with one line, the evaluation run KILLED,
   no evaluation JSON for it;
4. SIGKILL in the middle of an evaluation: the run left RUNNING, no evaluation JSON;
5. `dvc repro` completes the study without manual steps; no run is left RUNNING;
6. SIGKILL of the report stage half-way leaves reports/ and the metrics byte-identical, and
   `xiqa report` still exports the last finished study, not the half-logged one;
7. `xiqa models pull` reads the model from the server.
Every JSON the stages wrote is whole, and no temporary file is left behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from typer.testing import CliRunner

try:
    from tests.conftest import BIN, Server, project_env, run, tracking_server
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, Server, project_env, run, tracking_server

pytestmark = pytest.mark.slow

ARCH = "resnet34"
NAME = f"xiqa-objectcxr-{ARCH}"
TINY = {
    "data": {"objectcxr": {"n_images": 24, "min_size": 64, "max_size": 72}},
    "prepare": {"train": 0.5, "val": 0.25, "test": 0.25},
    "grid": {"models": [{"dataset": "objectcxr", "arch": ARCH}], "seeds": [1], "randomised": ["fr"]},
    "train": {"objectcxr": {"image_size": 32, "epochs": 1, "batch_size": 8, "pretrained": False,
                            "step_size": None, "augment": False}},
    "evaluate": {"batch_size": 8, "bootstrap": 20, "permutations": 10, "figure_samples": 1},
    "report": {"formats": ["md", "csv"]},
}
OUTPUTS = ("models", "eval", "metrics", "reports", "plots")


@pytest.fixture(scope="module")
def server() -> Server:
    with tracking_server() as running:
        yield running


def _stage(root: Path, server: Server, module: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["python", "-m", f"pipelines.{module}", "--dataset", "objectcxr", "--arch", ARCH,
                             *args], cwd=root, env={**project_env(root), **server.env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _interrupt(proc: subprocess.Popen, sig: int, ready: Callable[[], object], what: str):
    """Poll ``ready()`` until it returns something, send ``sig``, wait; returns (what ready
    returned, stderr)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the stage ended before {what}: {proc.communicate()}")
        found = ready()
        if found:
            proc.send_signal(sig)
            return found, proc.communicate(timeout=120)[1]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no {what} within 300 s")


def _running(client, exp_name: str, kind: str | None = None, metric: str | None = None):
    exp = client.get_experiment_by_name(exp_name)
    if exp is None:
        return None
    for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'"):
        if (kind is None or r.data.tags.get("xiqa.kind") == kind) and (metric is None or metric in r.data.metrics):
            return r
    return None


def _with_params(root: Path, change: dict) -> str:
    """Apply ``change`` (train.objectcxr keys) to params.yaml; returns the original text."""
    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["train"]["objectcxr"].update(change)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return original


def _assert_outputs_whole(root: Path) -> None:
    """No temporary file or folder of an atomic write is left, and every JSON parses."""
    for folder in OUTPUTS:
        leftovers = [p for p in (root / folder).rglob(".*") if p.name.endswith((".tmp", ".old"))]
        assert not leftovers, leftovers
        for path in (root / folder).rglob("*.json"):
            json.loads(path.read_text())


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for folder in OUTPUTS
            for p in sorted((root / folder).rglob("*")) if p.is_file()}


def test_interrupted_stages_leave_no_half_state_and_the_next_repro_completes(
        make_project, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from xiqa.cli import app
    from xiqa.tracking.owners import REAPED_TAG

    root = make_project(TINY)
    dvc = str(BIN / "dvc")
    run(root, dvc, "repro", "prepare@objectcxr", env=server.env)
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    client = mlflow.MlflowClient(server.url, registry_uri=server.url)  # not an earlier test's registry
    pointer = root / "models" / f"objectcxr-{ARCH}" / "trained" / "s1.json"

    # 1. SIGKILL mid-epoch: the run stays RUNNING, nothing registered, no pointer
    original = _with_params(root, {"epochs": 500})
    try:
        proc = _stage(root, server, "train", "--seed", "1")
        killed_train, _ = _interrupt(proc, signal.SIGKILL, lambda: _running(client, "xiqa-objectcxr",
                                                                              metric="train_loss"),
                                     "a training epoch logged")
    finally:
        (root / "params.yaml").write_text(original)
    assert proc.returncode == -signal.SIGKILL
    assert client.get_run(killed_train.info.run_id).info.status == "RUNNING"
    assert client.search_model_versions(f"name = '{NAME}'") == [] and not pointer.exists()
    _assert_outputs_whole(root)

    # 2. the next start of that training marks the orphan KILLED
    run(root, dvc, "repro", "train", "randomise", env=server.env)
    orphan = client.get_run(killed_train.info.run_id)
    assert orphan.info.status == "KILLED" and REAPED_TAG in orphan.data.tags
    assert json.loads(pointer.read_text())["alias"] == "trained-s1"

    # 3, 4. SIGTERM, then SIGKILL, while a model is being scored (larger inputs: slower scoring)
    original = _with_params(root, {"image_size": 160})
    # evaluate reads prepare's image cache at the train size; write the 160 px one by hand (and
    # remove it afterwards, so prepare's DVC output is as its lock says)
    from xiqa.data.dataset import write_image_cache

    cache = write_image_cache(root, "objectcxr", 160)
    try:
        proc = _stage(root, server, "evaluate")
        termed, err = _interrupt(proc, signal.SIGTERM, lambda: _running(client, "xiqa-objectcxr", "evaluation"),
                                 "an evaluation run")
        assert proc.returncode == 128 + signal.SIGTERM
        assert err.strip().splitlines()[-1].startswith("xiqa: terminated by signal 15: the MLflow run is marked KILLED")
        assert client.get_run(termed.info.run_id).info.status == "KILLED"
        proc = _stage(root, server, "evaluate")
        skilled, _ = _interrupt(proc, signal.SIGKILL, lambda: _running(client, "xiqa-objectcxr", "evaluation"),
                                "an evaluation run")
        assert proc.returncode == -signal.SIGKILL
        assert client.get_run(skilled.info.run_id).info.status == "RUNNING"
    finally:
        (root / "params.yaml").write_text(original)
        for path in cache:
            path.unlink()
    for interrupted in (termed, skilled):  # its evaluation pointer never appeared
        tags = interrupted.data.tags
        assert not (root / "eval" / f"objectcxr-{ARCH}" / f"{tags['condition']}-s{tags['seed']}.json").exists()
    _assert_outputs_whole(root)

    # 5. dvc repro completes; no run is left RUNNING
    out = run(root, dvc, "repro", "report", env=server.env).stdout
    assert "Running stage 'train" not in out and "Running stage 'evaluate@0'" in out
    assert client.get_run(skilled.info.run_id).info.status == "KILLED"
    exp = client.get_experiment_by_name("xiqa-objectcxr").experiment_id
    assert client.search_runs([exp], "attributes.status = 'RUNNING'") == []
    for cond in ("trained", "fr"):
        ev = json.loads((root / "eval" / f"objectcxr-{ARCH}" / f"{cond}-s1.json").read_text())
        assert client.get_run(ev["run_id"]).info.status == "FINISHED" and ev["n_images"] > 0
    _assert_outputs_whole(root)
    finished = _snapshot(root)
    assert any(k.startswith("reports/") for k in finished) and "reports/metrics/pointing_game.json" in finished
    assert "metrics/objectcxr-resnet34/pg_mean/gradcam.json" in finished  # the DVC metrics' headline

    # 6. SIGKILL of the report stage half-way: outputs untouched, `xiqa report` ignores that study
    proc = subprocess.Popen(["python", "-m", "pipelines.report", "--out", "reports"], cwd=root,
                            env={**project_env(root), **server.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    study_exp = client.get_experiment_by_name("xiqa-study").experiment_id
    logged = {r.info.run_id for r in client.search_runs([study_exp], max_results=1000)}
    half, _ = _interrupt(proc, signal.SIGKILL,  # at its first run: aggregate runs last milliseconds
                         lambda: next((r for r in client.search_runs([study_exp], max_results=1000)
                                       if r.info.run_id not in logged), None),
                         "a run of a new study")
    assert proc.returncode == -signal.SIGKILL
    assert _snapshot(root) == finished
    _assert_outputs_whole(root)
    half_study = half.data.tags["xiqa.study"]
    assert not client.search_runs([study_exp], f"tags.`xiqa.kind` = 'report' and tags.`xiqa.study` = '{half_study}'")
    monkeypatch.chdir(root)
    exported = CliRunner().invoke(app, ["report", "--format", "md", "--out", str(tmp_path / "again")])
    assert exported.exit_code == 0, exported.output
    tables = sorted((tmp_path / "again").glob("*.md"))
    assert [t.name for t in tables] == sorted(k[8:] for k in finished if k.startswith("reports/") and k.endswith(".md"))
    for table in tables:
        assert table.read_bytes() == finished[f"reports/{table.name}"], table.name

    # 7. the audit reads from the server
    pulled = CliRunner().invoke(app, ["models", "pull", f"{NAME}@trained-s1", "--out", str(tmp_path / "pulled")])
    assert pulled.exit_code == 0, pulled.output
    card = json.loads((tmp_path / "pulled" / "model_card.json").read_text())
    assert card["tracking_uri"] == server.url and card["version"] == json.loads(pointer.read_text())["version"]
    state = torch.load(tmp_path / "pulled" / "weights.pt", weights_only=True)
    assert "fc.weight" in state
