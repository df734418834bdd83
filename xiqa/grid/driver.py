"""The grid's Ray driver (``xiqa grid run``): check, plan, run the upstream stages here, submit
one Ray task per out-of-date cell, show their progress in a live table, then ``dvc repro --pull``
here, which restores the computed cells and runs the report."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xiqa.errors import XiqaError
from xiqa.grid.checks import dvc_remote, git_head, task_tracking
from xiqa.grid.node import CellTask, run_cell
from xiqa.grid.plan import GRID_STAGES, RAN, Plan, call, dvc, plan_grid

RAY_MISSING = "xiqa grid needs Ray: pip install 'xiqa[ray]'"
HEAD_RESOURCE = "node:__internal_head__"  # a resource Ray gives the head node only


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
    """``xiqa grid run``: see :mod:`xiqa.grid`. Returns the final state of every cell it
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
            call(dvc("repro", *names), root, env)

    plan = plan_grid(root, stages, run_upstream, env)
    todo = {c.name for c in plan.cells}
    inputs_here = sorted({n for c in plan.cells for n in plan.restore[c.name] if n not in todo})
    if inputs_here and not dry_run:  # what the tasks restore: outputs and run cache to the remote
        call(dvc("push", "--run-cache", *inputs_here), root, env)
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
    call(dvc("pull", "--run-cache", "--allow-missing"), root, env)
    targets = [] if "evaluate" in stages else list(stages)  # plain repro: the report too
    out = call(dvc("repro", "--pull", *targets), root, env,
               echo=lambda text: echo("\n".join(line for line in text.splitlines()
                                                if line.strip() and "it/s]" not in line)))
    rerun = sorted(set(RAN.findall(out)) & set(computed))
    if rerun:
        raise XiqaError(f"{', '.join(rerun)}: ran again here instead of being restored from the "
                        "run cache; its MLflow run and model version are duplicated")
