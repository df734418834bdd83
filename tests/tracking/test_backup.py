"""Backup and restore of the team server (SPEC 8.1): ``deploy/tracking-server.sh backup`` takes
pg_dump of both databases and then the artifacts from a running server A; ``restore`` makes a
fresh folder of it, started as server B on other ports. ``xiqa report`` against B writes the
same tables byte for byte, and ``xiqa models pull`` the same weights (same SHA-256). A backup
taken while another process logs metric batches restores a consistent prefix of what it wrote."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

try:
    from tests.conftest import BIN, SERVER_SCRIPT, Server, tracking_server
    from tests.report.test_report_cli import _log_study
    from tests.tracking.test_damaged_artifacts import _tiny_resnet
    from tests.tracking.test_restart import _sql
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, SERVER_SCRIPT, Server, tracking_server
    from test_damaged_artifacts import _tiny_resnet
    from test_report_cli import _log_study
    from test_restart import _sql

NAME = "xiqa-objectcxr-resnet34"


def _use(server: Server, monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    from xiqa.tracking import store

    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XIQA_PROJECT", str(project))
    store._REACHABLE.clear()


def _outputs(out: Path) -> dict[str, bytes]:
    """Every table file of ``xiqa report`` and the pulled weights of every version, by name."""
    cli = CliRunner()
    from xiqa.cli import app

    report = cli.invoke(app, ["report", "-f", "md,csv,latex", "--out", str(out / "report")])
    assert report.exit_code == 0, report.output
    found = {p.name: p.read_bytes() for p in (out / "report").iterdir() if p.is_file()}
    for ref in (f"{NAME}@trained-s1", f"{NAME}@trained-s2", f"{NAME}@best"):
        pulled = cli.invoke(app, ["models", "pull", ref, "--out", str(out / ref)])
        assert pulled.exit_code == 0, pulled.output
        found[ref] = hashlib.sha256((out / ref / "weights.pt").read_bytes()).hexdigest().encode()
        card = json.loads((out / ref / "model_card.json").read_text())
        found[ref + " card"] = json.dumps({k: v for k, v in card.items() if k != "tracking_uri"},
                                          sort_keys=True).encode()
    return found


@pytest.mark.slow
def test_a_backup_of_a_running_server_restores_the_same_report_and_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from xiqa.tracking import runs, store
    from xiqa.tracking.registry import register

    project = tmp_path / "proj"
    project.mkdir()
    (project / "params.yaml").write_text("{}\n")
    backup = tmp_path / "backup"
    with tracking_server() as a:
        _use(a, monkeypatch, project)
        store.ensure_store(project)
        for seed in (1, 2):
            with runs.tracked_run(project, "objectcxr", f"trained-s{seed}", {"seed": seed}, {}):
                mlflow.log_metrics({"val_auc": 0.6 + seed / 10, "test_accuracy": 0.5 + seed / 20})
                register(_tiny_resnet(seed), dataset="objectcxr", arch="resnet34", library="torchvision",
                         condition="trained", seed=seed, image_size=16, data_md5="abc.dir",
                         git_commit="c0ffee", val_auc=0.6 + seed / 10)
        _log_study(project, "s1")
        before = _outputs(tmp_path / "a")
        # the backup needs no login and no secret: only the server's folder
        no_secrets = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "XIQA_"))}
        no_secrets["PATH"] = f"{BIN}:{no_secrets['PATH']}"
        taken = subprocess.run(["bash", str(SERVER_SCRIPT), "backup", str(a.folder), str(backup)],
                               env=no_secrets, capture_output=True, text=True, timeout=300)
        assert taken.returncode == 0, taken.stderr
        assert taken.stdout.strip() == str(backup)
        assert sorted(p.name for p in backup.iterdir()) == ["artifacts", "mlflow.dump", "mlflow_auth.dump"]
        again = subprocess.run(["bash", str(SERVER_SCRIPT), "backup", str(a.folder), str(backup)],
                               env=no_secrets, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "already exists" in again.stderr  # never over an old backup
        a_url = a.url
    # A is stopped and its folder deleted: B is all there is
    with tracking_server(password=a.password, restore=backup) as b:
        assert b.url != a_url
        _use(b, monkeypatch, project)
        after = _outputs(tmp_path / "b")
    assert sorted(after) == sorted(before) and len(before) > 6
    assert [name for name in before if before[name] != after[name]] == []


KEYS = ("loss", "accuracy", "auc")  # one log_batch per step holds all three
STEPS = 15
WRITER = textwrap.dedent(f'''
    import sys
    import tempfile
    from pathlib import Path

    import mlflow
    from mlflow.entities import Metric

    stop, progress = Path(sys.argv[1]), Path(sys.argv[2])
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("writer")
    batches = 0
    for number in range(10_000):  # bounded; the test stops it long before
        run_id = client.create_run(experiment, run_name=f"w{{number}}").info.run_id
        for step in range({STEPS}):
            client.log_batch(run_id, metrics=[Metric(key, step + i / 10, 1_000 + step, step)
                                              for i, key in enumerate({KEYS!r})])
            batches += 1
            progress.write_text(str(batches))  # acknowledged by the server
        with tempfile.TemporaryDirectory() as tmp:
            done = Path(tmp) / "done.txt"
            done.write_text(run_id)
            client.log_artifact(run_id, str(done))
        client.set_terminated(run_id)
        if stop.exists():
            break
''')


def _batches(progress: Path) -> int:
    return int(progress.read_text() or 0) if progress.is_file() else 0


def _wait_batches(writer: subprocess.Popen, progress: Path, at_least: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (done := _batches(progress)) >= at_least:
            return done
        assert writer.poll() is None, writer.communicate()
        time.sleep(0.05)
    raise AssertionError(f"the writer logged fewer than {at_least} batches in 120 s")


@pytest.mark.slow
def test_a_backup_taken_while_a_writer_logs_restores_a_consistent_prefix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process logs runs of 15 steps, one batch of three metrics per step and an artifact at the
    end, while ``backup`` runs. The restored server holds a prefix of what the writer logged:
    fewer rows than server A at the end, at least every batch acknowledged before the backup
    began; every step it has holds all three metrics, each run's steps are 0..n-1 without a
    gap, every finished run has all its steps and its artifact, ``latest_metrics`` agrees with
    ``metrics``, and no row points at a run that is not there."""
    import mlflow

    backup, stop, progress = tmp_path / "backup", tmp_path / "stop", tmp_path / "progress"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    no_secrets = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "XIQA_"))}
    no_secrets["PATH"] = f"{BIN}:{no_secrets['PATH']}"
    with tracking_server() as a:
        writer = subprocess.Popen([sys.executable, str(script), str(stop), str(progress)], text=True,
                                  env={**no_secrets, **a.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            began = _wait_batches(writer, progress, 2 * STEPS + 3)  # two runs finished, a third under way
            taken = subprocess.run(["bash", str(SERVER_SCRIPT), "backup", str(a.folder), str(backup)],
                                   env=no_secrets, capture_output=True, text=True, timeout=300)
            ended = _batches(progress)
            assert taken.returncode == 0, taken.stderr
            assert writer.poll() is None  # it was logging all along
            _wait_batches(writer, progress, ended + STEPS)  # and goes on after the backup
        finally:
            stop.touch()
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err[-3000:]
        query = "SELECT run_uuid, key, step, value FROM metrics"
        on_a = {tuple(row) for row in _sql(a, query)}
    with tracking_server(password=a.password, restore=backup) as b:
        on_b = {tuple(row) for row in _sql(b, query)}
        runs = dict(_sql(b, "SELECT r.run_uuid, r.status FROM runs r JOIN experiments e "
                            "ON e.experiment_id = r.experiment_id WHERE e.name = 'writer'"))
        orphans = {table: _sql(b, f"SELECT count(*) FROM {table} x LEFT JOIN runs r ON r.run_uuid = x.run_uuid "
                                  "WHERE r.run_uuid IS NULL")[0][0]
                   for table in ("metrics", "latest_metrics", "params", "tags")}
        latest = {(run, key): int(step) for run, key, step in _sql(b, "SELECT run_uuid, key, step FROM latest_metrics")}
        for key, value in b.env.items():
            monkeypatch.setenv(key, value)
        client = mlflow.MlflowClient(b.url, registry_uri=b.url)
        artifacts = {run: [f.path for f in client.list_artifacts(run)] for run, status in runs.items()
                     if status == "FINISHED"}
    print(f"backup while writing: began after {began} batches, ended after {ended}; restored "
          f"{len(on_b) // len(KEYS)} batches of {len(on_a) // len(KEYS)}, runs {sorted(runs.values())}")
    assert on_b < on_a  # a prefix: nothing A lacks, and the writer logged on after the backup
    steps: dict[str, dict[int, set[str]]] = {}
    for run, key, step, _ in on_b:
        steps.setdefault(run, {}).setdefault(int(step), set()).add(key)
    assert set(steps) <= set(runs) and orphans == dict.fromkeys(orphans, "0"), orphans
    for run, by_step in steps.items():
        assert sorted(by_step) == list(range(len(by_step))), (run, sorted(by_step))  # no gap
        assert all(keys == set(KEYS) for keys in by_step.values()), (run, by_step)  # no half batch
        assert {latest[(run, key)] for key in KEYS} == {len(by_step) - 1}, run
    batches = sum(len(by_step) for by_step in steps.values())
    assert began <= batches <= ended + 1, (began, batches, ended)  # what the snapshot saw
    assert list(runs.values()).count("FINISHED") >= 2 and list(runs.values()).count("RUNNING") <= 1, runs
    for run, names in artifacts.items():
        assert len(steps.get(run, {})) == STEPS and names == ["done.txt"], (run, names)
