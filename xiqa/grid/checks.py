"""What the grid's driver checks before it submits anything: the commit every task clones, the
DVC remote every node reaches, and the tracking store every task can write to."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from xiqa.errors import XiqaError
from xiqa.grid.plan import call, dvc


def git_head(root: Path) -> str:
    """The commit every task clones: HEAD, refused when tracked files (other than dvc.lock,
    which only the driver writes) have uncommitted changes."""
    def git(*args: str) -> str:
        return call(["git", *args], root).strip()

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
