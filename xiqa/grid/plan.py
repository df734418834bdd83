"""Which cells a grid run computes, from DVC's own pipeline graph and ``dvc status``; and the
DVC command of this environment, which every part of the grid runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xiqa.errors import XiqaError

GRID_STAGES = ("train", "randomise", "evaluate", "sanity")
UPSTREAM_STAGES = ("data", "prepare", "pretrain")  # run by the driver first, then pushed
RAN = re.compile(r"Running stage '([^']+)'")


@dataclass(frozen=True)
class GridCell:
    """One matrix cell: its DVC address (``train@0``), stage and the stages it reads."""

    name: str
    stage: str
    inputs: tuple[str, ...]  # direct upstream stages (any stage), by DVC address


@dataclass
class Plan:
    """What a grid run will do: upstream stages to run here, cells to run on the cluster."""

    upstream: list[str]
    cells: list[GridCell]  # out of date, in an order where inputs come first
    up_to_date: list[str]
    restore: dict[str, list[str]] = field(default_factory=dict)  # cell -> stages to restore first


def dvc(*args: str) -> list[str]:
    """The DVC command of this Python environment (no reliance on PATH)."""
    return [sys.executable, "-m", "dvc", *args]


def call(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
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


def grid_cells(root: Path) -> tuple[dict[str, GridCell], dict[str, tuple[str, ...]]]:
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
    cells = {name: GridCell(name, name.split("@")[0], ins) for name, ins in inputs.items()
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
