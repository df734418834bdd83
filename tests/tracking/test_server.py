"""The same registry code against an MLflow tracking server (MLFLOW_TRACKING_URI=http://...):
register through REST with served artifacts, then list, pull and load by alias."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path, store_template: Path):
    """A tracking server on a copy of the template database, artifacts served from tmp."""
    import shutil

    db = tmp_path / "server" / "backend.db"
    db.parent.mkdir()
    shutil.copy(store_template, db)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
         "--artifacts-destination", str(tmp_path / "server" / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {proc.stderr.read()[-2000:]}")
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("mlflow server did not answer /health within 120 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_register_list_pull_and_load_through_a_tracking_server(server: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from torch import nn

    from xiqa.cli import app
    from xiqa.tracking.registry import load_model, register
    from xiqa.tracking.store import ensure_store, tracked_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "params.yaml").write_text("{}\n")
    assert ensure_store(project) == server
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with tracked_run(project, "lvot", "fr-s1", {"seed": 1}, {}):
        reg = register(model, dataset="lvot", arch="resnet50", condition="fr", seed=1, image_size=8,
                       data_md5="m.dir", git_commit="c0ffee")
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()
    loaded = load_model("models:/xiqa-lvot-resnet50@fr-s1")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))

    monkeypatch.chdir(project)
    rows = json.loads(CliRunner().invoke(app, ["models", "list", "--json"]).output)
    assert [(r["name"], r["version"], r["aliases"]) for r in rows] == [("xiqa-lvot-resnet50", reg.version, ["fr-s1"])]
    pulled = CliRunner().invoke(app, ["models", "pull", "xiqa-lvot-resnet50@fr-s1", "--out", str(tmp_path / "out")])
    assert pulled.exit_code == 0, pulled.output
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert card["tracking_uri"] == server and card["git_commit"] == "c0ffee"
    assert mlflow.get_tracking_uri() == server
