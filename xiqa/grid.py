"""The study's grid on a Ray cluster (SPEC 8): one Ray task per out-of-date cell of the matrix
stages ``train``, ``randomise``, ``evaluate`` and ``sanity``; DVC's run cache and the MLflow
tracking store are where the tasks meet. ``dvc repro`` stays the one-command path: nothing here
runs unless ``xiqa grid run`` is called, and Ray is imported only then.

The driver (:func:`run_grid`):

1. refuses uncommitted changes (every task clones the driver's commit), a project without a
   DVC remote, and, with a cluster address, the embedded sqlite store (other machines cannot
   write to it);
2. runs the cells' upstream stages (``data@<ds>``, ``prepare@<ds>``) here and pushes their
   outputs and run cache to the remote;
3. asks ``dvc status`` which cells are out of date (a cell whose input cell is out of date is
   too);
4. submits one Ray task per such cell, with the tasks of its input cells as arguments, so that
   Ray starts a cell only once its inputs are in the remote; each reserves
   ``gpus_per_cell`` GPUs when ``device: cuda`` (Ray sets ``CUDA_VISIBLE_DEVICES``), else one
   CPU; a failed task, or one whose node died, is retried up to ``max_retries`` times;
5. pulls the run cache and runs ``dvc repro --pull``, which restores every cell from it
   without running it (checked) and runs what remains (``report``), so that ``dvc.lock`` has
   one writer and the result is the study a sequential ``dvc repro`` gives.

A task (:func:`run_cell`, on any node) clones the repository at the driver's commit into a
scratch folder, restores its input stages from the remote's run cache (never runs them: an
input that is not there is an error), runs ``dvc repro --pull --single-item <cell>`` with the
driver's ``MLFLOW_TRACKING_URI``, pushes the cell's outputs and the run cache, and deletes the
clone. Its commands run under a small supervisor that dies with the Ray worker and takes the
stage with it (SIGTERM, so that the stage's MLflow run ends KILLED and keeps no model version);
a stage killed harder than that (a machine lost) is marked KILLED by the retry, which knows
from Ray which nodes are gone (:mod:`xiqa.tracking.store`, ``XIQA_NODES_GONE``) and which runs
an earlier attempt of its cell started (``XIQA_GRID_CELL``: one token per cell and grid run,
the same for each retry); a ``randomise`` cell killed after some of its seeds has those seeds'
runs marked KILLED and their versions deleted the same way, so each seed is registered once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xiqa.errors import XiqaError
from xiqa.tracking.store import GRID_CELL_ENV, NODE_ENV, NODES_GONE_ENV

GRID_STAGES = ("train", "randomise", "evaluate", "sanity")
UPSTREAM_STAGES = ("data", "prepare", "pretrain")  # run by the driver first, then pushed
SCRATCH_ENV = "XIQA_GRID_SCRATCH"  # where a task clones the project (default: the node's temp dir)
RAY_MISSING = "xiqa grid needs Ray: pip install 'xiqa[ray]'"
HEAD_RESOURCE = "node:__internal_head__"  # a resource Ray gives the head node only
_RAN = re.compile(r"Running stage '([^']+)'")
TERM_GRACE_S = 30.0  # how long a stage may take to end its MLflow run after SIGTERM


# --------------------------------------------------------------------------- the grid's cells
@dataclass(frozen=True)
class Cell:
    """One matrix cell: its DVC address (``train@model0-1``), stage and the stages it reads."""

    name: str
    stage: str
    inputs: tuple[str, ...]  # direct upstream stages (any stage), by DVC address


@dataclass
class Plan:
    """What a grid run will do: upstream stages to run here, cells to run on the cluster."""

    upstream: list[str]
    cells: list[Cell]  # out of date, in an order where inputs come first
    up_to_date: list[str]
    restore: dict[str, list[str]] = field(default_factory=dict)  # cell -> stages to restore first


def dvc(*args: str) -> list[str]:
    """The DVC command of this Python environment (no reliance on PATH)."""
    return [sys.executable, "-m", "dvc", *args]


def _call(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
          echo: Callable[[str], None] | None = None) -> str:
    """Run ``cmd``; return its output (stdout and stderr together), or raise a XiqaError naming
    the command and ending with the last lines of its output."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=False)
    if echo is not None:
        echo(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        raise XiqaError(f"`{' '.join(cmd[2:] if cmd[:2] == [sys.executable, '-m'] else cmd)}` "
                        f"exited {proc.returncode} in {cwd}:\n{tail}")
    return proc.stdout


def grid_cells(root: Path) -> tuple[dict[str, Cell], dict[str, tuple[str, ...]]]:
    """Every cell of the grid stages, and the direct inputs of every stage (by DVC address),
    from DVC's own pipeline graph (edges point from a stage to the stages it reads)."""
    from dvc.repo import Repo

    def address(stage: Any) -> str:  # Stage.addressing is relative to the working directory
        where = Path(stage.path).parent.resolve().relative_to(root.resolve())
        return stage.name if where == Path() else f"{where.as_posix()}/dvc.yaml:{stage.name}"

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        inputs = {address(s): tuple(sorted(address(u) for u in graph.successors(s)))
                  for s in graph.nodes}
    cells = {name: Cell(name, name.split("@")[0], ins) for name, ins in inputs.items()
             if name.split("@")[0] in GRID_STAGES and "@" in name}
    return cells, inputs


def _closure(names: Iterable[str], inputs: dict[str, tuple[str, ...]]) -> list[str]:
    """``names`` and everything they read, transitively, inputs before readers."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for up in inputs.get(name, ()):
            visit(up)
        order.append(name)

    for name in names:
        visit(name)
    return order


def out_of_date(root: Path, names: Iterable[str], env: dict[str, str] | None = None) -> set[str]:
    """The stages among ``names`` that ``dvc status`` reports changed (deps, outs, params or
    command; a missing output counts)."""
    names = list(names)
    if not names:
        return set()
    proc = subprocess.run(dvc("status", "--json", *names), cwd=root, env=env, text=True,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise XiqaError(f"`dvc status` exited {proc.returncode} in {root}: {proc.stderr.strip()[-2000:]}")
    return set(json.loads(proc.stdout or "{}")) & set(names)


def plan_grid(root: Path, stages: Sequence[str], run_upstream: Callable[[list[str]], None],
              env: dict[str, str] | None = None) -> Plan:
    """Which cells of ``stages`` a grid run must compute. ``run_upstream`` is called with the
    upstream stages (data, prepare, pretrain) of every cell of ``stages``, before DVC is asked what
    changed: their outputs are the cells' inputs."""
    unknown = sorted(set(stages) - set(GRID_STAGES))
    if unknown or not stages:
        raise XiqaError(f"--stages: {', '.join(unknown) or 'nothing'}: choose among "
                        f"{', '.join(GRID_STAGES)}")
    cells, inputs = grid_cells(root)
    wanted = [c for c in cells.values() if c.stage in stages]
    if not wanted:
        raise XiqaError(f"dvc.yaml has no cell of {', '.join(stages)} (the grid in params.yaml is empty?)")
    everything = _closure([c.name for c in wanted], inputs)
    upstream = [n for n in everything if n.split("@")[0] in UPSTREAM_STAGES]
    run_upstream(upstream)
    grid_part = [n for n in everything if n in cells]
    changed = out_of_date(root, grid_part, env)
    stale: set[str] = set()
    for name in grid_part:  # inputs first: a reader of a stale cell is stale too
        if name in changed or any(up in stale for up in inputs[name]):
            stale.add(name)
    missing = sorted(n for n in stale if cells[n].stage not in stages)
    if missing:
        raise XiqaError(f"{', '.join(missing)}: out of date but not among --stages "
                        f"{','.join(stages)}; add {', '.join(sorted({cells[n].stage for n in missing}))} "
                        "or run them first")
    todo = [cells[n] for n in grid_part if n in stale]
    restore = {c.name: _closure(c.inputs, inputs) for c in todo}
    return Plan(upstream, todo, [n for n in grid_part if n not in stale and cells[n].stage in stages],
                restore)


# --------------------------------------------------------------------------- the driver's checks
def git_head(root: Path) -> str:
    """The commit every task clones: HEAD, refused when tracked files (other than dvc.lock,
    which only the driver writes) have uncommitted changes."""
    def git(*args: str) -> str:
        return _call(["git", *args], root).strip()

    try:
        head = git("rev-parse", "HEAD")
    except XiqaError:
        raise XiqaError(f"{root}: not a git repository with a commit; the grid's tasks clone "
                        "the project at the driver's commit") from None
    dirty = git("diff", "--name-only", "HEAD", "--", ".", ":!dvc.lock").splitlines()
    if dirty:
        more = f" (and {len(dirty) - 1} more files)" if len(dirty) > 1 else ""
        raise XiqaError(f"{dirty[0]}: uncommitted change{more}; every task clones the driver's "
                        "commit, so commit first")
    return head


def dvc_remote(root: Path) -> str:
    """The project's default DVC remote (``dvc remote add -d``), which every node must reach."""
    proc = subprocess.run(dvc("remote", "default"), cwd=root, text=True, capture_output=True,
                          check=False)
    name = proc.stdout.strip()
    if proc.returncode != 0 or not name:
        raise XiqaError("no default DVC remote: the grid's tasks exchange data and the run cache "
                        "through it (dvc remote add -d NAME URL; git commit .dvc/config)")
    return name


def task_tracking(root: Path, cluster: bool) -> dict[str, str]:
    """The tracking settings every task gets: the driver's MLFLOW_TRACKING_URI (or, on this
    machine only, the project's embedded store) and its login."""
    from xiqa.tracking.store import (
        PASSWORD_ENV,
        TRACKING_ENV,
        USER_ENV,
        check_reachable,
        tracking_uri,
    )

    uri = tracking_uri(root)
    if uri.startswith(("http://", "https://")):
        check_reachable(uri)
    elif cluster:
        raise XiqaError(f"{TRACKING_ENV}={uri}: the tasks of a cluster run on other machines and "
                        "cannot write to this store; set MLFLOW_TRACKING_URI to a tracking server "
                        "(README: For a team)")
    env = {TRACKING_ENV: uri}
    for key in (USER_ENV, PASSWORD_ENV):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


# --------------------------------------------------------------------------- one cell, on a node
@dataclass(frozen=True)
class CellTask:
    """Everything a node needs to compute one cell."""

    cell: str
    restore: tuple[str, ...]  # stages to restore from the run cache first, inputs first
    repo: str                 # what `git clone` clones (a path or URL every node reaches)
    commit: str
    env: dict[str, str]       # tracking URI and login
    token: str = ""           # this cell in this grid run, the same for every retry (GRID_CELL_ENV)


class CellFailed(RuntimeError):
    """A command of a cell failed on its node (the message ends with its output)."""


def _supervised(cmd: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "xiqa.grid", "supervise", *cmd]


def _node_call(cmd: Sequence[str], cwd: Path, env: dict[str, str], log: list[str]) -> str:
    proc = subprocess.run(_supervised(cmd), cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=False)
    log.append(f"$ {' '.join(cmd)}\n{proc.stdout}")
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-30:])
        raise CellFailed(f"`{' '.join(cmd)}` exited {proc.returncode} on "
                         f"{os.uname().nodename}:\n{tail}")
    return proc.stdout


def run_cell(task: CellTask, board: Any, *_inputs: Any) -> dict[str, Any]:
    """Compute one cell on this node (a Ray task: ``inputs`` are the results of the input
    cells' tasks, passed only so that Ray waits for them). Returns the cell, node, whether the
    stage ran (False: restored from the run cache) and the seconds taken."""
    import ray

    started = time.monotonic()
    node = ray.get_runtime_context().get_node_id()
    gone = sorted(n["NodeID"] for n in ray.nodes() if not n["Alive"])
    board.started.remote(task.cell, node)
    env = {k: v for k, v in os.environ.items() if k not in ("XIQA_PROJECT", "DVC_ROOT", "DVC_STAGE")}
    env.update(task.env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` in cmds
    env[NODE_ENV], env[NODES_GONE_ENV] = node, ",".join(gone)
    if task.token:
        env[GRID_CELL_ENV] = task.token
    scratch = Path(tempfile.mkdtemp(prefix=f"xiqa-grid-{task.cell.replace('@', '-')}-",
                                    dir=os.environ.get(SCRATCH_ENV) or None))
    log: list[str] = []
    try:
        clone = scratch / "project"
        _node_call(["git", "clone", "--quiet", "--no-checkout", task.repo, str(clone)], scratch, env, log)
        _node_call(["git", "checkout", "--quiet", task.commit], clone, env, log)
        if task.restore:
            _node_call([sys.executable, "-m", "xiqa.grid", "restore", *task.restore], clone, env, log)
        out = _node_call(dvc("repro", "--pull", "--single-item", task.cell), clone, env, log)
        _node_call(dvc("push", "--run-cache", task.cell), clone, env, log)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"cell": task.cell, "node": node, "ran": task.cell in _RAN.findall(out),
            "seconds": time.monotonic() - started}


def restore_from_run_cache(root: Path, names: Sequence[str]) -> None:
    """Check out the outputs of stages ``names`` (inputs first) from the default remote's run
    cache without running any of them: a stage that is not there is an error, never a rerun
    (a rerun input training would register a second model version)."""
    from dvc.repo import Repo
    from dvc.stage.cache import RunCacheNotFoundError

    with Repo(str(root)) as repo, repo.lock:  # the lock `dvc repro` holds (checkout asserts it)
        repo.stage_cache.pull(None)  # what `dvc fetch --run-cache` does first
        for name in names:
            stage = repo.stage.get_target(name)
            try:
                repo.stage_cache.restore(stage, pull=True)
            except RunCacheNotFoundError:
                raise XiqaError(f"{name}: not in the DVC remote's run cache, so this node cannot "
                                "restore it (was it pushed with `dvc push --run-cache`?)") from None


def supervise(cmd: Sequence[str]) -> int:
    """Run ``cmd`` in its own process group and end that group with SIGTERM (then SIGKILL after
    ``TERM_GRACE_S``) when this process's parent, a Ray worker, dies or when this process gets
    SIGTERM: without it a stage outlives a lost worker and registers a model nobody uses.

    The command writes to a temporary file, copied to this process's stdout when it ends: a
    pipe to a dead worker would fail the stage's next print (its run would end FAILED instead
    of KILLED). Returns the command's exit status (``128 + signal`` when it was ended)."""
    parent = os.getppid()
    _die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the line above took effect
        return 128 + signal.SIGTERM
    ended: list[int] = []
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(list(cmd), start_new_session=True, stdout=out, stderr=subprocess.STDOUT)

        def end_group(signum: int, _frame: Any) -> None:
            ended.append(signum)
            _signal_group(child.pid, signal.SIGTERM)
            timer = threading.Timer(TERM_GRACE_S, _signal_group, (child.pid, signal.SIGKILL))
            timer.daemon = True
            timer.start()

        signal.signal(signal.SIGTERM, end_group)
        signal.signal(signal.SIGINT, end_group)
        status = child.wait()
        out.seek(0)
        try:
            shutil.copyfileobj(out, sys.stdout.buffer)
            sys.stdout.flush()
        except OSError:  # nobody reads any more (the worker is gone)
            pass
    return 128 + ended[0] if ended else status


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # the group has already ended: nothing left to signal
        pass


def _die_with_parent(sig: int) -> None:
    """Linux's PR_SET_PDEATHSIG: get ``sig`` when the parent process ends (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


# --------------------------------------------------------------------------- the driver
def _import_ray():
    try:
        import ray
    except ImportError:
        raise XiqaError(RAY_MISSING) from None
    return ray


class _Board:
    """A Ray actor on the driver's node: which node runs each cell and how often it started."""

    def __init__(self) -> None:
        self.starts: dict[str, tuple[int, str]] = {}

    def started(self, cell: str, node: str) -> None:
        attempt = self.starts.get(cell, (0, ""))[0] + 1
        self.starts[cell] = (attempt, node)

    def snapshot(self) -> dict[str, tuple[int, str]]:
        return dict(self.starts)


@dataclass
class CellState:
    """One row of the progress table."""

    cell: str
    state: str = "queued"  # queued | running | done | failed
    node: str = ""
    attempts: int = 0
    ran: bool | None = None
    seconds: float | None = None
    error: str = ""


def _table(states: Iterable[CellState], nodes: dict[str, str], title: str):
    from rich.table import Table

    style = {"queued": "dim", "running": "yellow", "done": "green", "failed": "bold red"}
    table = Table(title=title)
    for col in ("cell", "state", "node", "attempts", "seconds"):
        table.add_column(col, justify="right" if col in ("attempts", "seconds") else "left")
    for s in states:
        where = nodes.get(s.node, s.node[:12])
        state = {"running": f"running on {where}", "done": "done" + ("" if s.ran else " (restored)")}.get(
            s.state, s.state)
        table.add_row(s.cell, f"[{style[s.state]}]{state}[/]", where, str(s.attempts or ""),
                      "" if s.seconds is None else f"{s.seconds:.0f}")
    return table


def _node_names(ray: Any) -> dict[str, str]:
    """Ray node id -> ``ip/id-prefix`` (several nodes may share a machine)."""
    return {n["NodeID"]: f"{n['NodeManagerAddress']}/{n['NodeID'][:6]}" + ("" if n["Alive"] else " (gone)")
            for n in ray.nodes()}


def run_grid(root: Path, *, address: str | None = None, stages: Sequence[str] = GRID_STAGES,
             gpus_per_cell: float = 1.0, max_retries: int = 2, dry_run: bool = False,
             repo: str | None = None, echo: Callable[[str], None] = print,
             console: Any = None) -> list[CellState]:
    """``xiqa grid run``: see the module docstring. Returns the final state of every cell it
    submitted (none on a dry run or when all are up to date)."""
    from xiqa.params import load_params

    root = Path(root).resolve()
    params = load_params(root / "params.yaml")
    commit = git_head(root)
    dvc_remote(root)
    tracking = task_tracking(root, cluster=address is not None)
    env = {**os.environ, **tracking}

    def run_upstream(names: list[str]) -> None:
        if not dry_run:
            echo(f"upstream, here: dvc repro {' '.join(names)}")
            _call(dvc("repro", *names), root, env)

    plan = plan_grid(root, stages, run_upstream, env)
    todo = {c.name for c in plan.cells}
    inputs_here = sorted({n for c in plan.cells for n in plan.restore[c.name] if n not in todo})
    if inputs_here and not dry_run:  # what the tasks restore: outputs and run cache to the remote
        _call(dvc("push", "--run-cache", *inputs_here), root, env)
    if plan.up_to_date:
        echo(f"up to date: {len(plan.up_to_date)} cell(s)")
    if dry_run:
        for cell in plan.cells:
            echo(f"would run: {cell.name}")
        if not plan.cells:
            echo("nothing to run")
        return []
    states = _submit(plan, address, commit, repo or str(root), tracking,
                     params.device, gpus_per_cell, max_retries, console) if plan.cells else []
    failed = [s for s in states if s.state != "done"]
    if failed:
        details = "\n".join(f"{s.cell}: {s.error}" for s in failed)
        raise XiqaError(f"{len(failed)} of {len(states)} cell(s) failed; dvc.lock is unchanged:\n{details}")
    _finish(root, stages, [s.cell for s in states], env, echo)
    return states


def _submit(plan: Plan, address: str | None, commit: str, repo: str,
            tracking: dict[str, str], device: str, gpus_per_cell: float, max_retries: int,
            console: Any) -> list[CellState]:
    ray = _import_ray()
    from rich.console import Console
    from rich.live import Live

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        # the board lives on the head node (which a worker's failure does not take down) and is
        # restarted elsewhere if that node goes too: it only feeds the table
        board = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(_Board).options(
            resources={HEAD_RESOURCE: 0.001}).remote()
        resources = ({"num_gpus": gpus_per_cell, "num_cpus": 1} if device.startswith("cuda")
                     else {"num_cpus": 1})
        remote = ray.remote(run_cell).options(max_retries=max_retries, retry_exceptions=True,
                                              **resources)
        refs: dict[str, Any] = {}
        for cell in plan.cells:  # inputs first, so their refs exist
            task = CellTask(cell.name, tuple(plan.restore[cell.name]), repo, commit, tracking,
                            token=f"{cell.name}:{uuid.uuid4().hex}")
            refs[cell.name] = remote.remote(task, board, *(refs[i] for i in cell.inputs if i in refs))
        states = {c.name: CellState(c.name) for c in plan.cells}
        by_ref = {ref: name for name, ref in refs.items()}
        pending = list(refs.values())
        console = console or Console()
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while pending:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
                for ref in done:
                    st = states[by_ref[ref]]
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as err:  # a failed task, a node lost after the retries
                        st.state, st.error = "failed", _short_error(err)
                    else:
                        st.state, st.ran, st.seconds = "done", result["ran"], result["seconds"]
                        st.node = result["node"]
                try:
                    starts = ray.get(board.snapshot.remote(), timeout=10)
                except ray.exceptions.RayError:  # the board is being restarted: next tick
                    starts = {}
                for name, (attempts, node) in starts.items():
                    st = states[name]
                    st.attempts = attempts
                    if st.state == "queued":
                        st.state = "running"
                    if st.state == "running":
                        st.node = node
                live.update(_table(states.values(), _node_names(ray), "xiqa grid"))
        console.print()
        return list(states.values())
    finally:
        ray.shutdown()


def _short_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    lines = [ln for ln in text if ln.strip()]
    return "\n".join(lines[-12:]) if lines else type(err).__name__


def _finish(root: Path, stages: Sequence[str], computed: list[str], env: dict[str, str],
            echo: Callable[[str], None]) -> None:
    """Pull the run cache, then `dvc repro --pull` here: every computed cell must be restored
    from it, not run again (one writer of dvc.lock, the same study as a sequential repro)."""
    _call(dvc("pull", "--run-cache", "--allow-missing"), root, env)
    targets = [] if "evaluate" in stages else list(stages)  # plain repro: the report too
    out = _call(dvc("repro", "--pull", *targets), root, env,
                echo=lambda text: echo("\n".join(line for line in text.splitlines()
                                                 if line.strip() and "it/s]" not in line)))
    rerun = sorted(set(_RAN.findall(out)) & set(computed))
    if rerun:
        raise XiqaError(f"{', '.join(rerun)}: ran again here instead of being restored from the "
                        "run cache; its MLflow run and model version are duplicated")


# --------------------------------------------------------------------------- node-side entry
def _main(argv: list[str]) -> int:
    """``python -m xiqa.grid supervise CMD...`` / ``restore STAGE...`` (what tasks run)."""
    if argv[:1] == ["supervise"] and len(argv) > 1:
        return supervise(argv[1:])
    if argv[:1] == ["restore"]:
        try:
            restore_from_run_cache(Path.cwd(), argv[1:])
        except XiqaError as err:
            print(f"xiqa: error: {err}", file=sys.stderr)
            return err.exit_code
        return 0
    print("usage: python -m xiqa.grid supervise CMD... | restore STAGE...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
