"""The project's tracking store: URI, one-time schema creation, run life cycle, git commit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from xiqa.errors import XiqaError
from xiqa.tracking.store import (Terminated, embedded_uri, ensure_store, experiment_id, git_commit,
                                 open_client, tracked_run, tracking_uri)


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
