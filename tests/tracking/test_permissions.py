"""Permissions on the team server (SPEC 8.1), with basic auth on and users created through
MLflow's own auth client: a user granted READ reads (search, ``xiqa report``, ``xiqa models
pull``) and never writes, each refusal one sentence with nothing changed on the server; a user
granted nothing reads nothing; the admin's password and the secret key reach no log, no run, no
file of the store and no command line; the script refuses a missing or short secret key."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

try:
    from tests.conftest import SERVER_SCRIPT, Server, free_ports, tracking_server
    from tests.report.test_report_cli import _log_study
    from tests.tracking.test_damaged_artifacts import _error_lines, _tiny_resnet
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import SERVER_SCRIPT, Server, free_ports, tracking_server
    from test_damaged_artifacts import _error_lines, _tiny_resnet
    from test_report_cli import _log_study

NAME = "xiqa-objectcxr-resnet34"
READER = ("reader", "reader-" + "r" * 20)
NOBODY = ("nobody", "nobody-" + "n" * 20)


@pytest.fixture(scope="module")
def server() -> Server:
    # users see only what the admin grants them, so the grants below are what lets them read
    with tracking_server(XIQA_AUTH_DEFAULT_PERMISSION="NO_PERMISSIONS") as running:
        yield running


def _login(monkeypatch: pytest.MonkeyPatch, server: Server, who: tuple[str, str] | None = None) -> None:
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    if who is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", who[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", who[1])


def _snapshot(server: Server) -> dict:
    """Everything a write could change, as the admin sees it: runs (status, metrics, params,
    tags), versions, aliases. (MLflow's client reads the login from the environment.)"""
    import mlflow

    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        return _everything(mlflow.MlflowClient(server.url, registry_uri=server.url))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _everything(client) -> dict:
    runs = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], run_view_type=3, max_results=1000):
            runs[run.info.run_id] = (run.info.status, run.info.lifecycle_stage, run.data.metrics,
                                     run.data.params, run.data.tags)
    models = {}
    for rm in client.search_registered_models():
        versions = {mv.version: (mv.tags, mv.current_stage) for mv in client.search_model_versions(f"name='{rm.name}'")}
        models[rm.name] = (dict(rm.aliases), versions)
    return {"runs": runs, "models": models}


def _stage_exit(project: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """What a training stage does at its end, through the stages' error boundary
    (``pipelines._common.run``): a run, a registered version, an alias."""
    import typer

    from pipelines._common import run as stage_boundary
    from xiqa.tracking.registry import register
    from xiqa.tracking.runs import tracked_run

    app = typer.Typer()

    @app.command()
    def main() -> None:
        with tracked_run(project, "objectcxr", "trained-s2", {"seed": 2}, {}):
            register(_tiny_resnet(2), dataset="objectcxr", arch="resnet34", library="torchvision",
                     condition="trained", seed=2, image_size=16, data_md5="abc.dir", git_commit="c0ffee")

    argv = sys.argv
    sys.argv = ["train"]
    try:
        with pytest.raises(SystemExit) as stopped:
            stage_boundary(app)
    finally:
        sys.argv = argv
    return stopped.value.code, capsys.readouterr().err


@pytest.mark.slow
def test_a_reader_reads_and_never_writes_and_a_user_granted_nothing_reads_nothing(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    from xiqa import schema as S
    from xiqa.cli import app
    from xiqa.tracking import runs, store
    from xiqa.tracking.registry import register

    project = tmp_path / "proj"
    project.mkdir()
    (project / "params.yaml").write_text("{}\n")
    _login(monkeypatch, server)
    store.ensure_store(project)
    with runs.tracked_run(project, "objectcxr", "trained-s1", {"seed": 1}, {}) as run:
        mlflow.log_metric("val_auc", 0.75)
        register(_tiny_resnet(1), dataset="objectcxr", arch="resnet34", library="torchvision",
                 condition="trained", seed=1, image_size=16, data_md5="abc.dir", git_commit="c0ffee", val_auc=0.75)
    _log_study(project, "s1")
    admin = mlflow.MlflowClient(server.url, registry_uri=server.url)
    experiments = {name: admin.get_experiment_by_name(name).experiment_id
                   for name in ("xiqa-objectcxr", S.STUDY_EXPERIMENT)}
    auth = get_app_client("basic-auth", tracking_uri=server.url)
    for user, password in (READER, NOBODY):
        auth.create_user(user, password)
    for exp_id in experiments.values():
        auth.grant_user_permission(READER[0], "experiment", exp_id, "READ")
    auth.grant_user_permission(READER[0], "registered_model", NAME, "READ")
    before = _snapshot(server)
    cli = CliRunner()
    monkeypatch.setenv("XIQA_PROJECT", str(project))
    as_admin = cli.invoke(app, ["report", "-f", "md,csv", "--out", str(tmp_path / "admin")])
    assert as_admin.exit_code == 0, as_admin.output
    admin_pull = cli.invoke(app, ["models", "pull", f"{NAME}@trained-s1", "--out", str(tmp_path / "admin-pull")])
    assert admin_pull.exit_code == 0, admin_pull.output

    # READ: search, report, pull, exactly as the admin sees them
    _login(monkeypatch, server, READER)
    store._REACHABLE.clear()
    reader = mlflow.MlflowClient(server.url, registry_uri=server.url)
    found = reader.search_runs(list(experiments.values()), max_results=1000)
    assert len(found) == len(before["runs"]) == 1 + 8  # the training run, 7 aggregate/study runs + report
    report = cli.invoke(app, ["report", "-f", "md,csv", "--out", str(tmp_path / "reader")])
    assert report.exit_code == 0, report.output
    tables = sorted(p.name for p in (tmp_path / "admin").iterdir() if p.is_file())
    assert "table4-objectcxr.md" in tables
    assert all((tmp_path / "reader" / t).read_bytes() == (tmp_path / "admin" / t).read_bytes() for t in tables)
    pulled = cli.invoke(app, ["models", "pull", f"{NAME}@trained-s1", "--out", str(tmp_path / "reader-pull")])
    assert pulled.exit_code == 0, pulled.output
    assert hashlib.sha256((tmp_path / "reader-pull" / "weights.pt").read_bytes()).digest() == \
        hashlib.sha256((tmp_path / "admin-pull" / "weights.pt").read_bytes()).digest()

    # ... and no write: a stage's run, then each write through MLflow's own client
    code, err = _stage_exit(project, capsys)
    [line] = _error_lines(err)
    assert code == 2 and line == (
        f"xiqa: error: MLFLOW_TRACKING_URI={server.url}: the tracking server refused the request "
        "/api/2.0/mlflow/runs/create of MLFLOW_TRACKING_USERNAME=reader (HTTP 403, permission denied); ask its "
        "admin for READ (to read) or EDIT (to log runs and register models) on the experiment or model")
    source = admin.get_model_version(NAME, "1").source
    writes = {
        "log a run": lambda: reader.create_run(experiments["xiqa-objectcxr"]),
        "log a metric": lambda: reader.log_metric(run.info.run_id, "val_auc", 0.0),
        "set a tag": lambda: reader.set_tag(run.info.run_id, "note", "x"),
        "register a version": lambda: reader.create_model_version(NAME, source, run.info.run_id),
        "move an alias": lambda: reader.set_registered_model_alias(NAME, "best", "1"),
        "delete an alias": lambda: reader.delete_registered_model_alias(NAME, "trained-s1"),
        "delete a version": lambda: reader.delete_model_version(NAME, "1"),
        "delete the model": lambda: reader.delete_registered_model(NAME),
        "delete a run": lambda: reader.delete_run(run.info.run_id),
        "delete an experiment": lambda: reader.delete_experiment(experiments["xiqa-objectcxr"]),
    }
    for what, write in writes.items():
        with pytest.raises(MlflowException) as refused:
            write()
        sentence = str(store.refusal(refused.value))
        assert refused.value.error_code == "PERMISSION_DENIED", what
        assert sentence.startswith(f"MLFLOW_TRACKING_URI={server.url}: the tracking server refused the request "
                                   "/api/") and sentence.count(". ") == 0, (what, sentence)
    assert _snapshot(server) == before

    # nothing granted: nothing read
    _login(monkeypatch, server, NOBODY)
    store._REACHABLE.clear()
    nobody = mlflow.MlflowClient(server.url, registry_uri=server.url)
    assert nobody.search_runs(list(experiments.values()), max_results=1000) == []
    for args in (["report", "-f", "md", "--out", str(tmp_path / "nobody")],
                 ["models", "pull", f"{NAME}@trained-s1", "--out", str(tmp_path / "nobody-pull")]):
        res = cli.invoke(app, args)
        [line] = _error_lines(res.output)
        assert res.exit_code == 2 and "refused the request /api/2.0/mlflow/" in line, res.output
        assert "of MLFLOW_TRACKING_USERNAME=nobody (HTTP 403, permission denied)" in line
    assert not (tmp_path / "nobody").exists() and not (tmp_path / "nobody-pull").exists()
    assert _snapshot(server) == before

    # the secrets: not in the logs, any run, any file of the store, any command line
    secrets = {"admin password": server.password.encode(), "secret key": server.secret_key.encode()}
    for path in (p for p in server.folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        leaked = [what for what, secret in secrets.items() if secret in data]
        assert not leaked, f"{path}: holds the {leaked}"
    for values in before["runs"].values():
        text = repr(values).encode()
        assert not any(secret in text for secret in secrets.values())
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or []).encode()
        assert not any(secret in line for secret in secrets.values()), proc.info["cmdline"]
    assert any(b"mlflow" in " ".join(p.info["cmdline"] or []).encode() and b"server" in
               " ".join(p.info["cmdline"] or []).encode() for p in psutil.process_iter(["cmdline"]))


@pytest.mark.parametrize("key", [None, "k" * 31])
def test_the_script_refuses_auth_without_a_secret_key_of_32_bytes(tmp_path: Path, key: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "XIQA_"))}
    env |= {"XIQA_SERVER_AUTH": "1", "MLFLOW_AUTH_ADMIN_PASSWORD": "a long admin password",
            "XIQA_SERVER_PORT": str(free_ports(1)[0])}
    if key is not None:
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = key
    proc = subprocess.run(["bash", str(SERVER_SCRIPT), "start", str(tmp_path / "srv")], env=env,
                          capture_output=True, text=True, timeout=60)
    expected = ("needs MLFLOW_FLASK_SERVER_SECRET_KEY" if key is None
                else "MLFLOW_FLASK_SERVER_SECRET_KEY is 31 bytes long, shorter than 32")
    assert proc.returncode == 2 and expected in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert list((tmp_path / "srv").iterdir()) == []  # no cluster, no log, nothing started
