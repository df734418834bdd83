"""The team set-up (SPEC 8): ``deploy/tracking-server.sh`` starts an MLflow tracking server on a
real PostgreSQL with served artifacts and basic auth, and xiqa runs against it unchanged.

One server for the module (starting PostgreSQL and MLflow costs seconds): basic auth turns
away requests without the admin's login; four writer processes at once lose nothing; the
registry code registers, lists, pulls and loads through it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

try:
    from tests.conftest import SERVER_SCRIPT, Server, tracking_server
    from tests.tracking.test_concurrency import check_nothing_lost, run_writers
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import SERVER_SCRIPT, Server, tracking_server
    from test_concurrency import check_nothing_lost, run_writers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Server:
    with tracking_server() as running:
        yield running


def _status(url: str, login: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def test_the_server_keeps_runs_in_postgresql_and_artifacts_in_its_folder(server: Server) -> None:
    ini = (server.folder / "basic_auth.ini").read_text()
    assert "postgresql+psycopg2://xiqa:" in ini and "/mlflow_auth" in ini
    assert (server.folder / "postgres" / "PG_VERSION").read_text().strip().isdigit()
    assert oct((server.folder / "pg-password").stat().st_mode & 0o777) == "0o600"
    assert server.password not in ini  # the admin password stays in the environment
    status = subprocess.run(["bash", str(SERVER_SCRIPT), "status", str(server.folder)],
                            capture_output=True, text=True, timeout=60)
    assert (status.returncode, status.stdout.strip()) == (0, server.url)


def test_basic_auth_rejects_requests_without_the_admins_login(server: Server,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from xiqa.errors import XiqaError
    from xiqa.tracking import store

    api = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(api) == 401
    assert _status(api, (server.user, "wrong-password")) == 401
    assert _status(api, (server.user, server.password)) == 200
    assert _status(f"{server.url}/health") == 200  # unprotected: what the reachability probe asks

    monkeypatch.setattr(store, "_REACHABLE", set())
    with pytest.raises(XiqaError, match=r"requires a login \(HTTP 401\); set MLFLOW_TRACKING_USERNAME"):
        store.check_reachable(server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password")
    with pytest.raises(XiqaError, match=r"rejected the login of MLFLOW_TRACKING_USERNAME=admin"):
        store.check_reachable(server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
    store.check_reachable(server.url)
    assert server.url in store._REACHABLE


def test_four_writers_lose_no_run_metric_version_or_alias_on_postgresql(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workers, per_worker = 4, 3
    started = time.monotonic()
    run_writers(tmp_path / "project", workers, per_worker, env=server.env)
    print(f"{workers} writers x {per_worker} runs against PostgreSQL: {time.monotonic() - started:.1f} s")
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    check_nothing_lost(server.url, workers, per_worker)


def test_register_list_pull_and_load_through_the_server(server: Server, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from torch import nn

    from xiqa.cli import app
    from xiqa.tracking.lookup import load_model
    from xiqa.tracking.registry import register
    from xiqa.tracking.runs import tracked_run
    from xiqa.tracking.store import ensure_store

    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "params.yaml").write_text("{}\n")
    assert ensure_store(project) == server.url
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with tracked_run(project, "lvot", "fr-s1", {"seed": 1}, {}):
        reg = register(model, dataset="lvot", arch="resnet50", library="torchvision", condition="fr", seed=1, image_size=8,
                       data_md5="m.dir", git_commit="c0ffee")
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()
    stored = [p.read_text() for p in (server.folder / "artifacts").rglob("MLmodel")]  # served
    assert len([m for m in stored if f"run_id: {reg.run_id}" in m and "pickle" in m]) == 1
    loaded = load_model("models:/xiqa-lvot-resnet50@fr-s1")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))

    monkeypatch.chdir(project)
    rows = json.loads(CliRunner().invoke(app, ["models", "list", "--prefix", "xiqa-lvot", "--json"]).output)
    assert [(r["name"], r["version"], r["aliases"]) for r in rows] == [("xiqa-lvot-resnet50", reg.version, ["fr-s1"])]
    pulled = CliRunner().invoke(app, ["models", "pull", "xiqa-lvot-resnet50@fr-s1", "--out", str(tmp_path / "out")])
    assert pulled.exit_code == 0, pulled.output
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert card["tracking_uri"] == server.url and card["git_commit"] == "c0ffee"
    state = torch.load(tmp_path / "out" / "weights.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert mlflow.get_tracking_uri() == server.url
