"""One grid cell on one node (a Ray task): clone the driver's commit, restore the cell's inputs
from the DVC remote's run cache, ``dvc repro`` the cell, push it, delete the clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xiqa.errors import XiqaError
from xiqa.grid.plan import RAN, dvc
from xiqa.tracking.owners import GRID_CELL_ENV, NODE_ENV, NODES_GONE_ENV

SCRATCH_ENV = "XIQA_GRID_SCRATCH"  # where a task clones the project (default: the node's temp dir)


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
    return {"cell": task.cell, "node": node, "ran": task.cell in RAN.findall(out),
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

