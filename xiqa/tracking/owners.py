"""Who owns a run, and the runs whose owner is gone: a run records the process that started it
(host, boot, pid and its start time, and in a grid task its Ray node and cell), so that a later
start of the same run can mark KILLED what a killed process left RUNNING."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

# SIGKILL, a power cut or an OOM kill ends a process without letting it end its run, which MLflow
# then shows as RUNNING for ever. Every run records who runs it, so that a later start of the same
# run can tell a dead owner from a live one (another `dvc exp run --queue` worker, say).
HOST_TAG, BOOT_TAG, PID_TAG, PID_START_TAG = "xiqa.host", "xiqa.boot", "xiqa.pid", "xiqa.pid_start"
REAPED_TAG = "xiqa.reaped"
# A task of `xiqa grid run` (xiqa.grid) names its Ray node and the nodes Ray knows are gone: a run
# started on a gone node is dead even on another machine, where no pid can be checked.
NODE_TAG, NODE_ENV, NODES_GONE_ENV = "xiqa.node", "XIQA_NODE", "XIQA_NODES_GONE"
# ... and its cell's submission (one token per cell per grid run, the same for every retry): Ray
# starts a retry only once the attempt before it has failed, so a run of that token started by
# another process is an earlier, dead attempt, whichever machine it ran on.
GRID_CELL_TAG, GRID_CELL_ENV = "xiqa.grid_cell", "XIQA_GRID_CELL"
# A stage that registers several models in one process (randomise: every seed) is one unit for
# DVC: killed after its first seed, it is run again from the start. Its runs carry
# COMPLETE_TAG "false" until the stage's last model is written, then "true"; a FINISHED run still
# "false" whose process is gone is a leftover of an interrupted stage and is reaped like a
# RUNNING one, so the rerun registers that seed once, not twice. Runs without the tag (older
# stores, other kinds of runs) are never touched.
COMPLETE_TAG = "xiqa.stage_complete"
STALE_ELSEWHERE_S = 48 * 3600  # no heartbeat exists: another machine's run is presumed dead after this


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``, field 22):
    with the pid it names one process even after pids wrap. None: no such process; "": no /proc."""
    if not Path("/proc/self/stat").exists():
        return ""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # after "pid (comm)", field 3 is index 0


def process_tags() -> dict[str, str]:
    """Host, boot id, pid and pid start time of this process (and, in a grid task, its Ray
    node), as run tags."""
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), BOOT_TAG: _boot_id(), PID_TAG: str(pid),
            PID_START_TAG: _start_ticks(pid) or ""}
    for tag, env in ((NODE_TAG, NODE_ENV), (GRID_CELL_TAG, GRID_CELL_ENV)):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def _alive(pid: int, start: str) -> bool:
    ticks = _start_ticks(pid)
    if ticks == "":  # no /proc (macOS): the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return ticks is not None and (not start or ticks == start)


def owner_gone(tags: dict[str, str], start_time_ms: int | None, now_s: float | None = None) -> bool:
    """Whether the process that started a run (its :func:`process_tags`) is gone: it ran on a
    Ray node that ``$XIQA_NODES_GONE`` names, or it was an earlier attempt of this process's grid
    cell (``$XIQA_GRID_CELL``; both set by a grid task); on this host, its pid no longer names
    the same process, or the machine rebooted since; on another host (or without tags), the run
    started more than ``STALE_ELSEWHERE_S`` ago."""
    gone_nodes = set(filter(None, os.environ.get(NODES_GONE_ENV, "").split(",")))
    if tags.get(NODE_TAG) and tags[NODE_TAG] in gone_nodes:
        return True
    here = process_tags()
    if tags.get(GRID_CELL_TAG) and tags[GRID_CELL_TAG] == here.get(GRID_CELL_TAG) and \
            any(tags.get(k) != here[k] for k in (HOST_TAG, BOOT_TAG, PID_TAG, PID_START_TAG)):
        return True
    if tags.get(HOST_TAG) == here[HOST_TAG] and tags.get(PID_TAG, "").isdigit():
        if tags.get(BOOT_TAG) and here[BOOT_TAG] and tags[BOOT_TAG] != here[BOOT_TAG]:
            return True
        return not _alive(int(tags[PID_TAG]), tags.get(PID_START_TAG, ""))
    age = (now_s if now_s is not None else time.time()) - (start_time_ms or 0) / 1000
    return age > STALE_ELSEWHERE_S


def reap_stale_runs(client: Any, experiment_id: str, run_name: str) -> list[str]:
    """Mark KILLED every run named ``run_name`` in the experiment that a process left behind when
    it was killed: RUNNING, or FINISHED in a stage that never completed (``COMPLETE_TAG`` still
    "false"), whose owner is gone (:func:`owner_gone`); delete any model version it registered.
    Runs of live processes are left alone. Returns the ids of the runs reaped."""
    from xiqa.tracking.registry import discard_versions

    reaped = []
    name = f"attributes.run_name = '{run_name}'"
    left = [*client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and {name}",
                                max_results=1000),
            *client.search_runs([experiment_id], f"attributes.status = 'FINISHED' and {name} and "
                                f"tags.`{COMPLETE_TAG}` = 'false'", max_results=1000)]
    for run in left:
        if not owner_gone(run.data.tags, run.info.start_time):
            continue
        who = process_tags()
        owner = f"{run.data.tags.get(PID_TAG, '?')} on {run.data.tags.get(HOST_TAG, '?')}"
        if run.data.tags.get(NODE_TAG):
            owner += f" (Ray node {run.data.tags[NODE_TAG]})"
        client.set_tag(run.info.run_id, REAPED_TAG,
                       f"process {owner} gone; marked KILLED by {who[PID_TAG]} on {who[HOST_TAG]}")
        discard_versions(client, run.info.run_id)
        client.set_terminated(run.info.run_id, "KILLED")
        reaped.append(run.info.run_id)
    return reaped

