"""Where a run's results come from: the project's git commit (the data's MD5 is
:func:`xiqa.tracking.registry.data_md5`)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(root: Path) -> str:
    """``git rev-parse HEAD`` of the project, ``+ "-dirty"`` when tracked files other than
    ``dvc.lock`` (which ``dvc repro`` rewrites as it goes) differ from it; ``"unknown"``
    outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head
