"""The tracking server goes away mid-stage (issue 25, item 1), on the real parts: a real
``deploy/tracking-server.sh`` server (PostgreSQL + ``mlflow server``, basic auth, 127.0.0.1).

- ``python -m pipelines.train`` of a tiny project rides out PostgreSQL stopped
  (``pg_ctl stop -m fast``) for 20 s, and ``mlflow server`` SIGKILLed (its process group) and
  started again by the script: one FINISHED run, one version, no metric row lost (PostgreSQL's
  ``metrics`` rows of the run read before the fault and after).
- `dvc repro evaluate@0` of a tiny project rides out both faults, one inside each model
  version's evaluation run: one FINISHED run per version with every metric, no metric row lost,
  no version added, and `dvc status` finds the stage up to date.
- ``XIQA_TRACKING_RETRY_S=3`` and either part down until the stage gives up: one sentence naming
  the URI, exit 2, no model version; once the server is back, the stage's rerun marks the left run
  KILLED. The stage here is a small script with xiqa's run life cycle (``tracked_run``, a metric
  per step, a model registered at the end) behind the stages' own error boundary
  (``pipelines._common.run``), so the fault lands mid-run at a known step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

try:
    from tests.conftest import BIN, REPO, SERVER_SCRIPT, Server, project_env, tracking_server
    from tests.conftest import run as run_in
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, REPO, SERVER_SCRIPT, Server, project_env, tracking_server
    from conftest import run as run_in

pytestmark = pytest.mark.slow

ANNOUNCE = "retrying for up to"

STAGE = textwrap.dedent('''
    import time
    from pathlib import Path

    import typer

    from pipelines._common import run

    app = typer.Typer()


    @app.command()
    def main(project: Path, seed: int, steps: int, progress: Path) -> None:
        import mlflow
        import torch
        from torch import nn

        from xiqa.tracking.registry import register
        from xiqa.tracking.runs import tracked_run

        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
        with tracked_run(project, "lvot", f"fr-s{seed}", {"seed": seed}, {}) as active:
            for step in range(steps):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
                progress.write_text(f"{active.info.run_id} {step + 1}")  # acknowledged by the server
                time.sleep(0.25)
            register(model, dataset="lvot", arch="resnet18", library="torchvision", condition="fr",
                     seed=seed, image_size=8, data_md5="m.dir", git_commit="c0ffee")


    if __name__ == "__main__":
        run(app)
''')


@pytest.fixture(scope="module")
def server() -> Server:
    """One server for the module; each test leaves it running."""
    with tracking_server() as running:
        yield running


def _pg(program: str, *args: str) -> subprocess.CompletedProcess:
    """A PostgreSQL program, as the clusters' owner (``postgres`` when root), from the newest
    /usr/lib/postgresql/<version>/bin (as the deploy script finds it), else from PATH."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                  key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)])
    exe = str(bins[-1] / program) if bins else program
    command = [exe, *args]
    if os.getuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def _metric_rows(server: Server, run_id: str) -> int:
    """Rows of run ``run_id`` in PostgreSQL's ``metrics`` table (over its socket, not MLflow)."""
    pgdata = server.folder / "postgres"
    port = re.findall(r"^port = (\d+)$", (pgdata / "postgresql.conf").read_text(), re.M)[-1]
    out = _pg("psql", "-h", str(pgdata), "-p", port, "-U", "xiqa", "-d", "mlflow", "-tAc",
              f"SELECT count(*) FROM metrics WHERE run_uuid = '{run_id}'")
    return int(out.stdout.strip())


def _start_stage(server: Server, tmp_path: Path, seed: int, steps: int, retry_s: int) -> tuple[subprocess.Popen, Path]:
    project = tmp_path / f"project-{seed}"
    project.mkdir(exist_ok=True)
    (project / "params.yaml").write_text("{}\n")
    script, progress = tmp_path / "stage.py", tmp_path / f"progress-{seed}"
    script.write_text(STAGE)
    progress.unlink(missing_ok=True)
    env = {**os.environ, **server.env, "XIQA_TRACKING_RETRY_S": str(retry_s), "PYTHONPATH": str(REPO),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        env.pop(key, None)
    stage = subprocess.Popen([sys.executable, str(script), str(project), str(seed), str(steps), str(progress)],
                             cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return stage, progress


def _wait_steps(stage: subprocess.Popen, progress: Path, steps: int, limit_s: float = 120) -> tuple[str, int]:
    """Wait until the stage has logged ``steps`` metrics; its run id and how many it logged."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if progress.is_file() and (text := progress.read_text().split()) and len(text) == 2 and int(text[1]) >= steps:
            return text[0], int(text[1])
        if stage.poll() is not None:
            pytest.fail(f"the stage exited {stage.returncode} early: {stage.communicate()[1][-3000:]}")
        time.sleep(0.1)
    stage.kill()
    pytest.fail(f"the stage logged fewer than {steps} metrics in {limit_s} s")


def _start_postgresql(server: Server) -> None:
    _pg("pg_ctl", "-D", str(server.folder / "postgres"), "-l", str(server.folder / "logs" / "postgres.log"),
        "-w", "-t", "60", "start")


def _kill_mlflow(server: Server) -> None:
    os.killpg(int((server.folder / "mlflow.pid").read_text()), signal.SIGKILL)  # server and workers


def _start_mlflow(server: Server) -> None:
    """``tracking-server.sh start`` on the same folder, port, key and admin password (PostgreSQL,
    still running, is left as it is)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "XIQA_SERVER_PORT": server.url.rsplit(":", 1)[1], "XIQA_SERVER_AUTH": "1",
           "MLFLOW_FLASK_SERVER_SECRET_KEY": server.secret_key,
           "MLFLOW_AUTH_ADMIN_PASSWORD": server.password, "XIQA_SERVER_WORKERS": "2"}
    started = subprocess.run(["bash", str(SERVER_SCRIPT), "start", str(server.folder)], env=env,
                             capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    assert started.stdout.strip().splitlines()[-1] == server.url


def _finish(stage: subprocess.Popen, limit_s: float = 240) -> tuple[int, str]:
    try:
        _, err = stage.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        stage.kill()
        pytest.fail(f"the stage did not end within {limit_s} s: {stage.communicate()[1][-3000:]}")
    return stage.returncode, err


def _runs_and_versions(server: Server, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    """``(run id, status)`` of every run ``fr-s<seed>`` and the model versions each registered."""
    import mlflow

    client = mlflow.MlflowClient(server.url, registry_uri=server.url)  # not the last ensure_store's
    experiment = client.get_experiment_by_name("xiqa-lvot")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], f"attributes.run_name = 'fr-s{seed}'")
    versions = [v.version for r in runs for v in client.search_model_versions(f"run_id = '{r.info.run_id}'")]
    return [(r.info.run_id, r.info.status) for r in runs], versions


@pytest.mark.parametrize("fault", ["postgresql", "mlflow"])
def test_a_server_that_stays_down_fails_the_stage_in_one_sentence(server: Server, tmp_path: Path, fault: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With XIQA_TRACKING_RETRY_S=3 and the server down until the stage gives up: one sentence,
    exit 2, no version; the rerun once the server is back marks the left run KILLED."""
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    seed = {"postgresql": 3, "mlflow": 4}[fault]
    pgdata = str(server.folder / "postgres")
    stage, progress = _start_stage(server, tmp_path, seed, 200, retry_s=3)
    run_id, _ = _wait_steps(stage, progress, 3)
    before = _metric_rows(server, run_id)
    if fault == "postgresql":
        _pg("pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop")
    else:
        _kill_mlflow(server)
    started = time.monotonic()
    rc, err = _finish(stage, 60)
    gave_up_s = time.monotonic() - started
    if fault == "postgresql":
        _start_postgresql(server)
    else:
        _start_mlflow(server)
    print(f"{fault} down: gave up after {gave_up_s:.1f} s; {before} rows before, {_metric_rows(server, run_id)} "
          f"after; stderr:\n{err}")
    assert rc == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("xiqa: error:")]
    why = "it answered HTTP 503: its database may be down" if fault == "postgresql" else "no connection"
    assert len(errors) == 1 and f"MLFLOW_TRACKING_URI={server.url}: " in errors[0], err
    assert f"XIQA_TRACKING_RETRY_S=3 s ({why})" in errors[0], err
    assert len([line for line in err.splitlines() if ANNOUNCE in line]) == 1, err
    assert "Traceback" not in err and "Retrying (" not in err, err
    assert _metric_rows(server, run_id) >= before
    runs, versions = _runs_and_versions(server, seed)
    assert runs == [(run_id, "RUNNING")] and versions == []  # the server took nothing more
    # what the next `dvc repro` does: the stage again, which marks the left run KILLED first
    again, _ = _start_stage(server, tmp_path, seed, 2, retry_s=3)
    rc, err = _finish(again)
    assert rc == 0, err[-3000:]
    runs, versions = _runs_and_versions(server, seed)
    assert sorted(status for _, status in runs) == ["FINISHED", "KILLED"] and len(versions) == 1
    assert dict(runs)[run_id] == "KILLED"


def _fault(server: Server, fault: str) -> None:
    """The fault, then the server back: PostgreSQL stopped (``pg_ctl stop -m fast``) for 20 s, or
    ``mlflow server`` killed and started again 5 s later."""
    if fault == "postgresql":
        _pg("pg_ctl", "-D", str(server.folder / "postgres"), "-m", "fast", "-w", "stop")
        time.sleep(20)
        _start_postgresql(server)
    else:
        _kill_mlflow(server)
        time.sleep(5)
        _start_mlflow(server)


TINY_TRAIN = {
    "data": {"objectcxr": {"n_images": 24, "min_size": 64, "max_size": 72}},
    "prepare": {"train": 0.5, "val": 0.25, "test": 0.25},
    "grid": {"models": [{"dataset": "objectcxr", "arch": "resnet18"}], "seeds": [1], "archs": ["resnet18"]},
    "train": {"objectcxr": {"image_size": 32, "epochs": 30, "batch_size": 4, "lr": 0.01,
                            "step_size": 1, "pretrained": False}},
}


def _metric_set(server: Server) -> dict[str, set[str]]:
    """``run id -> {"key step value", ...}`` of RUNNING runs, straight from PostgreSQL."""
    pgdata = server.folder / "postgres"
    port = re.findall(r"^port = (\d+)$", (pgdata / "postgresql.conf").read_text(), re.M)[-1]
    out = _pg("psql", "-h", str(pgdata), "-p", port, "-U", "xiqa", "-d", "mlflow", "-tA", "-F", " ", "-c",
              "SELECT m.run_uuid, m.key, m.step, m.value FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
              "WHERE r.status = 'RUNNING'")
    found: dict[str, set[str]] = {}
    for line in out.stdout.split("\n"):
        if line.strip():
            run_id, rest = line.split(" ", 1)
            found.setdefault(run_id, set()).add(rest)
    return found


@pytest.mark.parametrize("fault", ["postgresql", "mlflow"])
def test_the_train_stage_rides_out_the_server_going_away(server: Server, make_project, fault: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m pipelines.train` of a tiny project against the server, once its first epoch is
    logged: PostgreSQL stopped (``pg_ctl stop -m fast``) for 20 s (MLflow answers 503), or
    ``mlflow server`` SIGKILLed and started again by the script 5 s later (refused connections).
    The stage completes: one FINISHED run, one version, every epoch's metrics, no row lost."""
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    root = make_project(TINY_TRAIN)
    run_in(root, str(BIN / "dvc"), "repro", "prepare@objectcxr")
    started = time.monotonic()
    stage = subprocess.Popen([sys.executable, "-m", "pipelines.train", "--dataset", "objectcxr", "--arch", "resnet18",
                              "--seed", "1"], cwd=root, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**project_env(root), **server.env, "XIQA_TRACKING_RETRY_S": "120"})
    deadline = time.monotonic() + 180
    before: dict[str, set[str]] = {}
    while time.monotonic() < deadline and stage.poll() is None:
        before = {r: rows for r, rows in _metric_set(server).items() if any(x.startswith("train_loss ") for x in rows)}
        if before:
            break
        time.sleep(0.3)
    assert len(before) == 1 and stage.poll() is None, stage.communicate()[1][-3000:]
    (run_id, rows_before), = before.items()
    _fault(server, fault)
    rc, err = _finish(stage)
    after = _metric_rows(server, run_id)
    print(f"train, {fault} down: {len(rows_before)} metric rows before the fault, {after} after; "
          f"{time.monotonic() - started:.1f} s; stderr:\n{err[-2000:]}")
    assert rc == 0, err[-3000:]
    announced = [line for line in err.splitlines() if ANNOUNCE in line]  # killed mid-request: dropped
    reasons = ["HTTP 503"] if fault == "postgresql" else ["connection refused", "connection dropped"]
    assert len(announced) == 1 and any(f"{server.url} unreachable ({r})" in announced[0] for r in reasons), err
    assert "Retrying (" not in err and "Traceback" not in err, err
    import mlflow

    client = mlflow.MlflowClient(server.url, registry_uri=server.url)  # not the last ensure_store's
    experiment = client.get_experiment_by_name("xiqa-objectcxr")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], f"attributes.run_id = '{run_id}'")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert not client.search_runs([experiment.experiment_id], "attributes.status != 'FINISHED'")
    assert len(client.search_model_versions(f"run_id = '{run_id}'")) == 1
    assert len(client.get_metric_history(run_id, "train_loss")) == TINY_TRAIN["train"]["objectcxr"]["epochs"]
    pgdata = server.folder / "postgres"
    port = re.findall(r"^port = (\d+)$", (pgdata / "postgresql.conf").read_text(), re.M)[-1]
    out = _pg("psql", "-h", str(pgdata), "-p", port, "-U", "xiqa", "-d", "mlflow", "-tA", "-F", " ", "-c",
              f"SELECT key, step, value FROM metrics WHERE run_uuid = '{run_id}'")
    assert rows_before <= {line for line in out.stdout.split("\n") if line.strip()}  # none lost


METHODS = ["gradcam", "input_x_gradient", "normgrad_conv3x3_multi"]
TINY_EVALUATE = {
    "data": {"objectcxr": {"n_images": 40, "min_size": 64, "max_size": 72}},
    "prepare": {"train": 0.5, "val": 0.2, "test": 0.3},
    "grid": {"models": [{"dataset": "objectcxr", "arch": "resnet18"}], "seeds": [1], "randomised": ["fr"],
             "archs": ["resnet18"]},
    "train": {"objectcxr": {"image_size": 64, "epochs": 1, "batch_size": 8, "pretrained": False,
                            "step_size": None, "augment": False}},
    "evaluate": {"batch_size": 4, "figure_samples": 1, "methods": METHODS},
}


def _sql(server: Server, query: str) -> list[list[str]]:
    """The rows of ``query`` in the server's PostgreSQL (over its socket, not MLflow)."""
    pgdata = server.folder / "postgres"
    port = re.findall(r"^port = (\d+)$", (pgdata / "postgresql.conf").read_text(), re.M)[-1]
    out = _pg("psql", "-h", str(pgdata), "-p", port, "-U", "xiqa", "-d", "mlflow", "-tA", "-F", "\t", "-c", query)
    return [line.split("\t") for line in out.stdout.split("\n") if line.strip()]


def _all_metric_rows(server: Server) -> set[tuple[str, ...]]:
    return {tuple(row) for row in _sql(server, "SELECT run_uuid, key, step, value, timestamp FROM metrics")}


def test_the_evaluate_stage_rides_out_both_faults_and_dvc_repro_completes(server: Server, make_project,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`dvc repro evaluate@0` (``python -m pipelines.evaluate``) of a tiny project whose train and
    randomise stages are done (two model versions: trained-s1, fr-s1) against the server:
    PostgreSQL stopped for 20 s once the first evaluation run is RUNNING, and ``mlflow server``
    SIGKILLed and started again 5 s later once the second one is. The stage completes: one
    FINISHED evaluation run per model version with every metric, each fault inside its run's
    span, no metric row of PostgreSQL lost, still one version per model, and `dvc status` finds
    the study up to date (the next `dvc repro` has nothing left to do)."""
    import mlflow

    from xiqa import schema as S

    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    root = make_project(TINY_EVALUATE)
    dvc = str(BIN / "dvc")
    client = mlflow.MlflowClient(server.url, registry_uri=server.url)  # not the last ensure_store's
    name = "xiqa-objectcxr-resnet18"  # the train test's model too, when the module runs whole
    earlier = {v.version for v in client.search_model_versions(f"name = '{name}'")}
    run_in(root, dvc, "repro", "train", "randomise", env=server.env)
    versions = sorted(client.get_model_version_by_alias(name, alias).version for alias in ("trained-s1", "fr-s1"))
    assert versions == sorted({v.version for v in client.search_model_versions(f"name = '{name}'")} - earlier)
    started = time.monotonic()
    stage = subprocess.Popen([dvc, "repro", "evaluate@0"], cwd=root, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             env={**project_env(root), **server.env, "XIQA_TRACKING_RETRY_S": "120"})
    faults: list[tuple[str, str, int, set[tuple[str, ...]]]] = []  # fault, run id, at (ms), rows before
    for fault in ("postgresql", "mlflow"):
        deadline, run_id = time.monotonic() + 240, ""
        while time.monotonic() < deadline and stage.poll() is None and not run_id:
            running = [r[0] for r in _sql(server, "SELECT run_uuid FROM runs WHERE name LIKE 'evaluate %' "
                                                  "AND status = 'RUNNING'") if r[0] not in {f[1] for f in faults}]
            run_id = running[0] if running else ""
            if not run_id:
                time.sleep(0.2)
        assert run_id and stage.poll() is None, f"no evaluation run for the {fault} fault: {stage.communicate()}"
        before = _all_metric_rows(server)
        at = int(time.time() * 1000)
        _fault(server, fault)
        faults.append((fault, run_id, at, before))
    rc, err = _finish(stage, 300)
    print(f"evaluate, both faults: {time.monotonic() - started:.1f} s; stderr:\n{err[-3000:]}")
    assert rc == 0, err[-3000:]
    announced = [line for line in err.splitlines() if ANNOUNCE in line]
    assert announced and f"{server.url} unreachable (HTTP 503)" in announced[0], err  # the first outage
    assert all(f"{server.url} unreachable (" in line for line in announced), err
    assert "Retrying (" not in err and "Traceback" not in err, err
    experiment = client.get_experiment_by_name("xiqa-objectcxr")
    assert experiment is not None
    assert not client.search_runs([experiment.experiment_id], "attributes.status != 'FINISHED'")
    evaluations = client.search_runs([experiment.experiment_id], f"tags.`{S.KIND}` = 'evaluation'")
    assert sorted(r.data.tags["model_version"] for r in evaluations) == sorted(versions)  # one run per version
    for fault, run_id, at, _ in faults:  # each fault landed inside its run's span
        found = client.get_run(run_id).info
        assert found.status == "FINISHED" and found.start_time <= at < found.end_time, (fault, found)
    wanted = {S.pg_metric(m, smoothed) for m in METHODS for smoothed in (False, True)} | {"n_images", S.TAU}
    keys = [set(r.data.metrics) for r in evaluations]
    assert wanted <= keys[0] and keys[0] == keys[1], keys  # every metric of every run
    for r in evaluations:
        pointer = root / "eval" / "objectcxr-resnet18" / f"{r.data.tags['condition']}-s1.json"
        summary = json.loads(pointer.read_text())
        assert summary["run_id"] == r.info.run_id
        assert summary["pg"] == {m: round(r.data.metrics[S.pg_metric(m, False)], 6) for m in METHODS}
        version = client.get_model_version(name, r.data.tags["model_version"])
        assert version.tags["evaluation_run_id"] == r.info.run_id
    after = _all_metric_rows(server)
    for fault, _, _, before in faults:
        assert before <= after, f"{fault}: {len(before - after)} metric rows lost"
    assert len(client.search_model_versions(f"name = '{name}'")) == len(earlier) + len(versions)  # none added
    status = run_in(root, dvc, "status", "evaluate@0", env=server.env).stdout
    assert "up to date" in status, status
