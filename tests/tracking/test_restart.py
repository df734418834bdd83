"""The tracking server goes away mid-stage (issue 25, item 1), on the real parts: a real
``deploy/tracking-server.sh`` server (PostgreSQL + ``mlflow server``, basic auth, 127.0.0.1) and a
real stage process: it logs a metric per step in an MLflow run (xiqa's run life cycle,
``tracked_run``), registers a model at the end, and reports errors through the stages' own error
boundary (``pipelines._common.run``).

- PostgreSQL stopped (``pg_ctl stop -m fast``) for 20 s, then started: the stage rides it out.
- ``mlflow server`` killed (SIGKILL to its process group), then started again by the script: the same.
- ``XIQA_TRACKING_RETRY_S=3`` and a server that stays down: one sentence naming the URI, exit 2,
  no model version; once the server is back, the stage's rerun marks the left run KILLED.

Each time PostgreSQL's ``metrics`` rows of the run are counted before the fault and after.
"""

from __future__ import annotations

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
    from tests.conftest import BIN, REPO, SERVER_SCRIPT, Server, tracking_server
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, REPO, SERVER_SCRIPT, Server, tracking_server

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
        from xiqa.tracking.store import tracked_run

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

    client = mlflow.MlflowClient(server.url)
    experiment = client.get_experiment_by_name("xiqa-lvot")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], f"attributes.run_name = 'fr-s{seed}'")
    versions = [v.version for r in runs for v in client.search_model_versions(f"run_id = '{r.info.run_id}'")]
    return [(r.info.run_id, r.info.status) for r in runs], versions


def _rides_it_out(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int,
                  fault, recover) -> None:
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    steps = 40
    started = time.monotonic()
    stage, progress = _start_stage(server, tmp_path, seed, steps, retry_s=120)
    run_id, logged = _wait_steps(stage, progress, 5)
    before = _metric_rows(server, run_id)
    fault()
    recover()
    rc, err = _finish(stage)
    print(f"seed {seed}: {logged} metrics acknowledged and {before} rows in PostgreSQL before the fault, "
          f"{_metric_rows(server, run_id)} after; stage {time.monotonic() - started:.1f} s; stderr:\n{err}")
    assert rc == 0, err[-3000:]
    announced = [line for line in err.splitlines() if ANNOUNCE in line]
    assert len(announced) == 1 and server.url in announced[0] and "XIQA_TRACKING_RETRY_S" in announced[0], err
    assert "Retrying (" not in err and "Traceback" not in err, err
    assert before >= logged
    assert _metric_rows(server, run_id) == steps  # none before the fault lost, none doubled
    runs, versions = _runs_and_versions(server, seed)
    assert runs == [(run_id, "FINISHED")] and len(versions) == 1


def test_the_stage_rides_out_postgresql_stopped_for_20_s(server: Server, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL down for 20 s mid-stage (MLflow answers 503): the stage rides it out."""
    pgdata = str(server.folder / "postgres")

    def fault() -> None:
        _pg("pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop")
        time.sleep(20)

    def recover() -> None:
        _start_postgresql(server)

    _rides_it_out(server, tmp_path, monkeypatch, 1, fault, recover)


def test_the_stage_rides_out_a_killed_and_restarted_mlflow_server(server: Server, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow server`` SIGKILLed mid-stage, started again 5 s later: the stage rides it out."""
    def fault() -> None:
        _kill_mlflow(server)
        time.sleep(5)

    _rides_it_out(server, tmp_path, monkeypatch, 2, fault, lambda: _start_mlflow(server))


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
