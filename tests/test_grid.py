"""`xiqa grid run` (SPEC 8): the study's grid cells as Ray tasks, DVC's run cache and the MLflow
server as meeting points.

Fast tests: Ray is never imported by the default path, its absence is one sentence, and
`--dry-run` lists exactly the out-of-date cells.

The slow one is real: a two-node Ray cluster on 127.0.0.1 (`ray.cluster_utils.Cluster`, one CPU
per node, no dashboard; every node, worker and the driver pinned to 127.0.0.1, and checked with
psutil to listen nowhere else), a local-folder DVC remote, the PostgreSQL-backed MLflow server of
`deploy/tracking-server.sh`, and a tiny grid (2 architectures x 2 seeds, FR, one epoch at 32 px).
In the middle of the run the worker node running a training cell is lost (its training process
and raylet SIGKILLed); a fresh worker node joins. It checks that the retry marks the lost run KILLED with no
model version and the cell is retried elsewhere; every cell has exactly one FINISHED run and one
registered version; tasks ran on two nodes; a `dvc repro` afterwards runs nothing and `dvc status`
is clean; and `xiqa report` gives the same tables, and every evaluation run the same numbers, bit
for bit, as a sequential `dvc repro` of the same grid in another project.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from tests.conftest import BIN, Server, beyond_loopback, listening, project_env, run, tracking_server
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, Server, beyond_loopback, listening, project_env, run, tracking_server

from xiqa.tracking.owners import PID_TAG, REAPED_TAG

ARCHS = ("resnet34", "efficientnet_b0")
SEEDS = (1, 2)
TINY = {
    "data": {"objectcxr": {"n_images": 24, "min_size": 64, "max_size": 72},
             "lvot": {"n_patients": 4, "slices_per_patient": 2, "size": 48}},
    "prepare": {"train": 0.5, "val": 0.25, "test": 0.25},
    "grid": {"models": [{"dataset": "objectcxr", "arch": a} for a in ARCHS], "seeds": list(SEEDS),
             "randomised": ["fr"], "archs": list(ARCHS)},
    "pretrain": {"route": "none"},  # trained from scratch, no SR: the pretrain stage only says so
    "train": {"objectcxr": {"image_size": 32, "epochs": 1, "batch_size": 8, "pretrained": False,
                            "step_size": None, "augment": False}},
    "evaluate": {"batch_size": 8, "bootstrap": 20, "permutations": 10, "figure_samples": 1},
    "report": {"formats": ["md", "csv"]},
}
LOOPBACK = "127.0.0.1"
CELLS = {"train@0", "train@1",
         "randomise@model0-fr", "randomise@model1-fr", "evaluate@0", "evaluate@1",
         "sanity@0", "sanity@1"}


def _with_remote(root: Path, remote: Path) -> None:
    """A local-folder DVC remote (an absolute path: every clone must find the same folder)."""
    run(root, str(BIN / "dvc"), "remote", "add", "-d", "shared", str(remote))
    run(root, "git", "add", ".dvc/config")
    run(root, "git", "commit", "-qm", "DVC remote")


# --------------------------------------------------------------------------- fast
def test_the_default_path_never_imports_ray(make_project, tmp_path: Path) -> None:
    root = make_project(TINY)
    _with_remote(root, tmp_path / "remote")
    code = ("import sys; from typer.testing import CliRunner; from xiqa.cli import app; "
            "r = CliRunner().invoke(app, ['grid', 'run', '--dry-run']); "
            "print(r.output); print('RAY' if 'ray' in sys.modules else 'NO-RAY')")
    out = run(root, sys.executable, "-c", code).stdout
    assert out.strip().splitlines()[-1] == "NO-RAY"
    # nothing computed yet: every cell of the four stages is out of date
    assert set(re.findall(r"would run: (\S+)", out)) == CELLS


def test_sanity_cells_wait_for_the_trainings_of_their_model_and_nothing_else(make_project) -> None:
    from xiqa.errors import XiqaError
    from xiqa.grid.plan import plan_grid

    root = make_project(TINY)
    upstream: list[str] = []
    plan = plan_grid(root, ["train", "sanity"], upstream.extend)
    # run here first, pushed, restored: the data and each architecture's start
    assert set(upstream) == {"data@objectcxr", "prepare@objectcxr", *(f"pretrain@{a}" for a in ARCHS)}
    order = [c.name for c in plan.cells]
    assert set(order) == {c for c in CELLS if c.startswith(("train@", "sanity@"))}
    for i, cell in enumerate(("sanity@0", "sanity@1")):
        trainings = {f"train@{i}"}  # one process trains every seed of the cell
        inputs = set(next(c for c in plan.cells if c.name == cell).inputs)
        assert inputs == trainings | {"data@objectcxr", "prepare@objectcxr"}, inputs  # not randomise
        assert all(order.index(t) < order.index(cell) for t in trainings)  # submitted after them
        assert set(plan.restore[cell]) == inputs | {f"pretrain@{ARCHS[i]}"}  # and what the trainings read
    # the trainings are out of date: sanity alone cannot run on the cluster
    with pytest.raises(XiqaError, match=r"train@0.*out of date but not among --stages sanity"):
        plan_grid(root, ["sanity"], upstream.extend)


def test_a_missing_ray_is_one_sentence(make_project, tmp_path: Path) -> None:
    root = make_project(TINY)
    _with_remote(root, tmp_path / "remote")
    code = ("import sys; sys.modules['ray'] = None\n"  # `import ray` now raises ImportError
            "from xiqa.grid.driver import _import_ray\n"
            "from xiqa.errors import XiqaError\n"
            "try:\n    _import_ray()\nexcept XiqaError as err:\n    print(err)")
    assert run(root, sys.executable, "-c", code).stdout.strip() == "xiqa grid needs Ray: pip install 'xiqa[ray]'"


def test_grid_run_refuses_uncommitted_changes_and_a_missing_remote(make_project, tmp_path: Path) -> None:
    root = make_project(TINY)
    dry = [sys.executable, "-m", "xiqa.cli", "grid", "run", "--dry-run"]
    proc = run(root, *dry, check=False)
    assert proc.returncode == 2 and "no default DVC remote" in proc.stderr
    _with_remote(root, tmp_path / "remote")
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "\n# edited\n")
    proc = run(root, *dry, check=False)
    assert proc.returncode == 2 and "params.yaml: uncommitted change" in proc.stderr


STAGE = """
import sys, time
from pathlib import Path
from xiqa.tracking.runs import tracked_run
root = Path(sys.argv[1])
with tracked_run(root, "lvot", "trained-resnet50-s1", {}, {}) as run:
    print("a line before the worker dies")
    (root / "run_id").write_text(run.info.run_id)
    while True:
        print("a line after", flush=True)  # to a pipe, a dead worker's would fail this
        time.sleep(0.1)
"""


def test_a_stage_under_the_supervisor_ends_its_run_killed_when_the_worker_dies(tmp_path: Path) -> None:
    import mlflow

    from xiqa.tracking.store import ensure_store

    root = tmp_path / "proj"
    root.mkdir()
    (tmp_path / "stage.py").write_text(STAGE)
    worker = (f"import subprocess, sys; subprocess.run([sys.executable, '-m', 'xiqa.grid', 'supervise', "
              f"sys.executable, {str(tmp_path / 'stage.py')!r}, {str(root)!r}], stdout=subprocess.PIPE)")
    proc = subprocess.Popen([sys.executable, "-c", worker], env=project_env(root))
    deadline = time.monotonic() + 120
    while not (root / "run_id").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the stage never started its run"
        time.sleep(0.2)
    proc.kill()  # the Ray worker dies: its supervisor gets SIGTERM and passes it to the stage
    proc.wait()
    client = mlflow.MlflowClient(ensure_store(root))
    run_id = (root / "run_id").read_text()
    while client.get_run(run_id).info.status == "RUNNING":
        assert time.monotonic() < deadline, "the stage's run was left RUNNING"
        time.sleep(0.2)
    assert client.get_run(run_id).info.status == "KILLED"


# --------------------------------------------------------------------------- slow
@pytest.fixture(scope="module")
def server() -> Server:
    with tracking_server() as running:
        yield running


def _runs(client, status: str | None = None) -> list:
    exp = client.get_experiment_by_name("xiqa-objectcxr")
    query = f"attributes.status = '{status}'" if status else ""
    return client.search_runs([exp.experiment_id], query, max_results=1000) if exp else []


def _ours(server: Server) -> list[int]:
    """Every process this test started: the Ray nodes, their workers, the grid driver (children
    of this process) and the tracking server (PostgreSQL, ``mlflow server``)."""
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)] + server.pids()


def _kill_a_training_node(client, cluster, grid: subprocess.Popen, server: Server, timeout_s: float = 600):
    """Wait until a training run is RUNNING on a worker node, then lose that node as a machine
    is lost: its training process (the run's ``xiqa.pid``) and its raylet SIGKILLed, so nobody
    ends the run; then add a fresh worker node. Returns (that run, the node id, the sockets that
    every process of the test listened on just before: ``listening``'s tuples)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if grid.poll() is not None:
            raise AssertionError(f"the grid ended (exit {grid.returncode}) before a training ran on a worker node")
        workers = {n.node_id: n for n in cluster.worker_nodes}
        for r in _runs(client, "RUNNING"):
            node = r.data.tags.get("xiqa.node")
            if r.data.tags.get("condition") == "trained" and node in workers:
                sockets = listening(_ours(server))  # every kind of process is up now
                os.kill(int(r.data.tags[PID_TAG]), signal.SIGKILL)
                cluster.remove_node(workers[node], allow_graceful=False)
                cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
                return r, node, sockets
        time.sleep(0.2)
    raise AssertionError(f"no training ran on a worker node within {timeout_s} s")


def _evaluation_numbers(client) -> dict[tuple[str, str], dict[str, float]]:
    """(model name, alias) -> every metric of its FINISHED evaluation run."""
    out = {}
    for r in _runs(client, "FINISHED"):
        if r.data.tags.get("xiqa.kind") == "evaluation":
            key = (r.data.tags["arch"], f"{r.data.tags['condition']}-s{r.data.tags['seed']}")
            assert key not in out, f"two finished evaluations of {key}"
            out[key] = dict(r.data.metrics)
    return out


@pytest.mark.slow
def test_the_grid_on_a_two_node_ray_cluster_equals_a_sequential_repro(
        make_project, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from ray.cluster_utils import Cluster

    dvc = str(BIN / "dvc")
    # the sequential reference, in its own project and embedded store
    sequential = make_project(TINY, name="sequential")
    started = time.monotonic()
    run(sequential, dvc, "repro")
    sequential_s = time.monotonic() - started
    print(f"\ntiny grid (8 cells): sequential dvc repro {sequential_s:.0f} s")

    root = make_project(TINY, name="cluster")
    _with_remote(root, tmp_path / "remote")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's own switch for "this machine is no cluster": every Ray process (the nodes, their
    # workers, the grid driver) then takes 127.0.0.1 as its node address, which otherwise
    # resolves to the machine's external interface (gRPC servers bound to `::` with it)
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    for key in ("PYTHONHASHSEED", "OMP_NUM_THREADS"):  # the nodes' workers inherit this process's
        monkeypatch.setenv(key, project_env(root)[key])
    monkeypatch.setenv("XIQA_GRID_SCRATCH", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": LOOPBACK})
    try:
        cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        client = mlflow.MlflowClient(server.url, registry_uri=server.url)
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        started = time.monotonic()
        with open(tmp_path / "grid.log", "w") as log:  # a file, not a pipe nobody reads meanwhile
            grid = subprocess.Popen([sys.executable, "-m", "xiqa.cli", "grid", "run", "--address",
                                     cluster.address, "--max-retries", "2"], cwd=root, text=True,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    env={**project_env(root), **server.env})
            killed, killed_node, sockets = _kill_a_training_node(client, cluster, grid, server)
            grid.wait(timeout=900)
        cluster_s = time.monotonic() - started
        output = (tmp_path / "grid.log").read_text()
        assert grid.returncode == 0, output[-6000:]
    finally:
        cluster.shutdown()
    print(f"\ntiny grid (8 cells): sequential dvc repro {sequential_s:.0f} s, "
          f"2-node Ray cluster with one node killed {cluster_s:.0f} s")
    # the GCS, raylets, workers, the driver, PostgreSQL and mlflow server: loopback only
    names = {who.split()[0] for _, _, who in sockets}
    assert {"gcs_server", "raylet", "postgres"} <= names, sorted(names)
    assert beyond_loopback(sockets) == []

    # the killed attempt: marked KILLED by the retry of its cell (its owner is gone), no version;
    # the retry finished on another node
    lost = client.get_run(killed.info.run_id)
    assert lost.info.status == "KILLED" and REAPED_TAG in lost.data.tags, (lost.info.status, lost.data.tags)
    assert client.search_model_versions(f"run_id = '{killed.info.run_id}'") == []
    finished = _runs(client, "FINISHED")
    cell = {k: killed.data.tags[k] for k in ("arch", "seed")}
    again = [r for r in finished if r.data.tags.get("condition") == "trained"
             and r.data.tags.get("xiqa.kind") not in ("evaluation", "sanity")
             and all(r.data.tags.get(k) == v for k, v in cell.items())]
    assert len(again) == 1 and again[0].data.tags["xiqa.node"] != killed_node

    # every model cell: exactly one FINISHED run and one registered version; nothing RUNNING
    assert _runs(client, "RUNNING") == []
    for arch in ARCHS:
        versions = client.search_model_versions(f"name = 'xiqa-objectcxr-{arch}'")
        for condition in ("trained", "fr"):
            for seed in SEEDS:
                runs = [r for r in finished if r.data.tags.get("condition") == condition
                        and r.data.tags.get("arch") == arch and r.data.tags.get("seed") == str(seed)
                        and r.data.tags.get("xiqa.kind") not in ("evaluation", "sanity")]
                assert len(runs) == 1, (arch, condition, seed, len(runs))
                mine = [v for v in versions if v.tags.get("condition") == condition and v.tags.get("seed") == str(seed)]
                assert [v.run_id for v in mine] == [runs[0].info.run_id], (arch, condition, seed)
    # tasks ran on (at least) two nodes, and never here: every model and evaluation run names one
    nodes = {r.data.tags.get("xiqa.node") for r in finished if r.data.tags.get("xiqa.kind") not in ("aggregate", "sanity")
             and r.data.tags.get("condition")}
    assert None not in nodes and len(nodes) >= 2, nodes

    # the driver restored every cell from the run cache; afterwards nothing is left to run
    assert not set(re.findall(r"Running stage '([^']+)'", output)) & CELLS
    assert "Running stage 'report'" in output
    again = run(root, dvc, "repro", env=server.env)
    assert "Running stage" not in again.stdout and "is cached" not in again.stdout
    assert "Data and pipelines are up to date." in run(root, dvc, "status", env=server.env).stdout

    # the same study as the sequential repro: every evaluation number and every table, bit for bit
    numbers = _evaluation_numbers(client)
    reference = _evaluation_numbers(mlflow.MlflowClient(f"sqlite:///{sequential / 'mlflow.db'}"))
    assert len(numbers) == len(ARCHS) * 2 * len(SEEDS) and numbers == reference
    for name, folder, env in (("cluster", root, server.env), ("sequential", sequential, {})):
        run(folder, sys.executable, "-m", "xiqa.cli", "report", "--format", "csv", "--out",
            str(tmp_path / f"tables-{name}"), env=env)
    tables = sorted(p.name for p in (tmp_path / "tables-cluster").glob("*.csv"))
    assert tables and tables == sorted(p.name for p in (tmp_path / "tables-sequential").glob("*.csv"))
    for table in tables:
        assert ((tmp_path / "tables-cluster" / table).read_bytes()
                == (tmp_path / "tables-sequential" / table).read_bytes()), table
    for folder in ("eval/objectcxr-resnet34", "eval/objectcxr-efficientnet_b0"):
        for pointer in sorted((sequential / folder).glob("*.json")):
            ours, theirs = (json.loads(p.read_text()) for p in (root / folder / pointer.name, pointer))
            assert {k: ours[k] for k in ("pg", "pg_smooth", "n_images")} == \
                   {k: theirs[k] for k in ("pg", "pg_smooth", "n_images")}
    # every task deleted its clone, except the killed attempt (its node died before it could)
    killed_cell = f"xiqa-grid-train-{ARCHS.index(cell['arch'])}-"  # train@<i>: every seed of the cell
    assert all(p.name.startswith(killed_cell) for p in (tmp_path / "scratch").iterdir())
