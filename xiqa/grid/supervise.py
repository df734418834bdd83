"""The supervisor that every command of a grid task runs under on its node
(``python -m xiqa.grid supervise CMD...``): the command dies with the Ray worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

TERM_GRACE_S = 30.0  # how long a stage may take to end its MLflow run after SIGTERM


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
