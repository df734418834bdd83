"""The project's tracking store: URI, one-time schema creation, run life cycle, git commit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from xiqa.errors import XiqaError
from xiqa.tracking.owners import (
    BOOT_TAG,
    HOST_TAG,
    PID_START_TAG,
    PID_TAG,
    REAPED_TAG,
    STALE_ELSEWHERE_S,
    owner_gone,
    process_tags,
)
from xiqa.tracking.provenance import git_commit
from xiqa.tracking.runs import Terminated, tracked_run
from xiqa.tracking.store import check_reachable, embedded_uri, ensure_store, experiment_id, open_client, tracking_uri


def test_embedded_store_is_sqlite_at_the_absolute_project_path(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = tracking_uri(Path("proj"))
    assert uri == f"sqlite:///{tmp_path.resolve()}/proj/mlflow.db" == embedded_uri(tmp_path / "proj")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking_uri(Path("proj")) == "http://tracking.example:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    with pytest.raises(XiqaError, match="file store is deprecated"):
        tracking_uri(Path("proj"))


def test_another_sqlite_store_keeps_artifacts_beside_its_database(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    shared = tmp_path / "shared" / "team.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{shared}")
    exp = mlflow.MlflowClient(ensure_store(tmp_path / "ws")).get_experiment(
        experiment_id(tmp_path / "ws", "xiqa-lvot"))
    assert shared.is_file() and not (tmp_path / "ws" / "mlflow.db").exists()
    assert exp.artifact_location == (shared.parent / "mlruns" / "xiqa-lvot").as_uri()


def test_parallel_first_use_creates_the_schema_once_without_errors(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from xiqa.tracking.store import experiment_id; "
            "print(experiment_id(Path(sys.argv[1]), 'xiqa-objectcxr'))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1  # one experiment, whoever created it
    assert (tmp_path / "mlflow.db").is_file() and not (tmp_path / "mlruns").exists()


def test_experiments_keep_artifacts_under_the_project_and_never_in_the_working_directory(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    exp = mlflow.MlflowClient(ensure_store(root)).get_experiment(experiment_id(root, "xiqa-lvot"))
    assert exp.artifact_location == (root / "mlruns" / "xiqa-lvot").as_uri()
    with tracked_run(root, "lvot", "r", {"a": 1, "b": None}, {"condition": "fr"}) as run:
        mlflow.log_text("x", "note.txt")
    assert (root / "mlruns" / "xiqa-lvot" / run.info.run_id / "artifacts" / "note.txt").is_file()
    assert not (work / "mlruns").exists()
    finished = mlflow.MlflowClient().get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.params == {"a": "1", "b": "None"}
    assert finished.data.tags["condition"] == "fr"


def test_a_run_ends_failed_on_an_exception_and_killed_on_sigterm(root: Path) -> None:
    import mlflow

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ValueError):
        with tracked_run(root, "lvot", "boom", {}, {}) as failed:
            raise ValueError("boom")
    with pytest.raises(Terminated):
        with tracked_run(root, "lvot", "term", {}, {}) as killed:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**7):  # the handler raises between bytecodes
                pass
    client = mlflow.MlflowClient()
    assert client.get_run(failed.info.run_id).info.status == "FAILED"
    assert client.get_run(killed.info.run_id).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is restored
    assert mlflow.active_run() is None


OWNER = r"""
import sys, time
from pathlib import Path

import torch

from xiqa.tracking import registry, runs, store

root = Path(sys.argv[1])
store.ensure_store(root)
with runs.tracked_run(root, "lvot", "fr-resnet50-s1", {}, {}):
    registry.register(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)), dataset="lvot",
                      arch="resnet50", library="torchvision", condition="fr", seed=1, image_size=2, data_md5="m", git_commit="c")
    print("registered", flush=True)
    time.sleep(600)
"""


def test_a_run_left_running_by_sigkill_is_marked_killed_by_the_next_start_and_loses_its_version(
        root: Path, tmp_path: Path) -> None:
    import mlflow

    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    owner = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert owner.stdout.readline().strip() == "registered", owner.stderr.read()
        client = mlflow.MlflowClient(ensure_store(root))
        [alive] = client.search_runs([experiment_id(root, "xiqa-lvot")])
        assert alive.data.tags[PID_TAG] == str(owner.pid) and alive.data.tags[HOST_TAG] == process_tags()[HOST_TAG]
        with tracked_run(root, "lvot", "fr-resnet50-s1", {}, {}):  # the owner lives: left alone
            pass
        assert client.get_run(alive.info.run_id).info.status == "RUNNING"
        assert client.get_model_version_by_alias("xiqa-lvot-resnet50", "fr-s1").run_id == alive.info.run_id
    finally:
        owner.kill()
        owner.communicate(timeout=60)
    with tracked_run(root, "lvot", "other-cell", {}, {}):  # another run name: not its business
        pass
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    with tracked_run(root, "lvot", "fr-resnet50-s1", {}, {}) as again:
        pass
    dead = client.get_run(alive.info.run_id)
    assert dead.info.status == "KILLED" and dead.info.end_time is not None
    assert dead.data.tags[REAPED_TAG].startswith(f"process {owner.pid} on ")
    assert client.search_model_versions("name = 'xiqa-lvot-resnet50'") == []
    assert client.get_registered_model("xiqa-lvot-resnet50").aliases == {}
    assert client.get_run(again.info.run_id).info.status == "FINISHED"


def test_a_terminated_run_keeps_no_registered_version(root: Path) -> None:
    import mlflow
    import torch

    from xiqa.tracking.registry import register

    with pytest.raises(Terminated):
        with tracked_run(root, "lvot", "fr-s2", {}, {}) as killed:
            register(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)), dataset="lvot",
                     arch="resnet50", library="torchvision", condition="fr", seed=2, image_size=2, data_md5="m", git_commit="c")
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**7):
                pass
    client = mlflow.MlflowClient()
    assert client.get_run(killed.info.run_id).info.status == "KILLED"
    assert client.search_model_versions("name = 'xiqa-lvot-resnet50'") == []


def test_owner_gone_trusts_only_this_hosts_pids_and_waits_out_other_hosts() -> None:
    here = process_tags()
    now = 1_000_000_000.0
    recent, old = int((now - 60) * 1000), int((now - STALE_ELSEWHERE_S - 60) * 1000)
    assert not owner_gone(here, recent, now)  # this very process
    assert owner_gone(here | {PID_START_TAG: "1"}, recent, now)  # its pid, now another process
    if here[BOOT_TAG]:
        assert owner_gone(here | {BOOT_TAG: "another-boot"}, recent, now)  # rebooted since
    elsewhere = here | {HOST_TAG: here[HOST_TAG] + "-other"}
    assert not owner_gone(elsewhere, recent, now) and owner_gone(elsewhere, old, now)
    assert not owner_gone({}, recent, now) and owner_gone({}, old, now)  # untagged: age only


class _Deny(BaseHTTPRequestHandler):
    """A server behind basic auth that protects even /health (some proxies do)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="lab"')
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_server_answering_401_is_reachable_and_asks_for_the_login_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Deny)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with pytest.raises(XiqaError) as missing:
            check_reachable(uri)
        assert str(missing.value) == (f"MLFLOW_TRACKING_URI={uri}: the tracking server requires a login "
                                      "(HTTP 401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ana")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(XiqaError, match=r"rejected the login of MLFLOW_TRACKING_USERNAME=ana \(HTTP 401\)"):
            check_reachable(uri)
    finally:
        httpd.shutdown()


def test_read_only_commands_refuse_a_project_without_a_store(tmp_path: Path) -> None:
    with pytest.raises(XiqaError, match="no MLflow store here"):
        open_client(tmp_path)
    assert not (tmp_path / "mlflow.db").exists()


def test_git_commit_is_head_dirty_when_tracked_files_change_and_unknown_outside_git(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "unknown"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, env=env, check=True,  # noqa: E731
                                    capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.lock").write_text("x\n")
    git("add", "-A")
    git("commit", "-qm", "c")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "dvc.lock").write_text("rewritten by dvc repro\n")
    (tmp_path / "untracked.txt").write_text("ignored\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert git_commit(tmp_path) == f"{head}-dirty"


def test_pointing_mlflow_at_one_project_does_not_leak_into_the_next(tmp_path: Path) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; ensure_store must not let that
    environment value send a second project's runs into the first project's database."""
    first = ensure_store(tmp_path / "a")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    second = ensure_store(tmp_path / "b")
    assert second == embedded_uri(tmp_path / "b") != first
    assert (tmp_path / "b" / "mlflow.db").is_file()
