"""Atomic writes (a file or folder appears whole or not at all: temp file, then rename), and the
reading of the small JSON pointers the stages pass on.

A full disk is a user error: :func:`atomic_path` turns ENOSPC / EDQUOT into one sentence naming
the file and "no space left on device", having removed its temporary path, so the previous
version of the file is intact; :func:`disk_full` does the same for an error raised elsewhere
(MLflow writing local artifacts), for the error boundaries."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xiqa.errors import XiqaError


@contextmanager
def atomic_path(target: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    Works for files and folders. On an exception the temporary path is removed and ``target``
    is left exactly as it was.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as err:
        full = disk_full(err, target)
        if full is None:
            raise
        raise full from None
    work = tmp / (target.name + suffix)
    try:
        yield work
        if target.is_dir() and not target.is_symlink():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(work, target)
            shutil.rmtree(old)
        else:
            os.replace(work, target)
    except OSError as err:
        full = disk_full(err, target)
        if full is None:
            raise
        raise full from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(err: BaseException, path: Path | str | None = None) -> XiqaError | None:
    """The one sentence for a write that found the disk (or the quota) full, naming ``path``
    (default: the file the error names); None for any other error."""
    if not isinstance(err, OSError) or err.errno not in _FULL:
        return None
    where = path if path is not None else (err.filename or "a file")
    what = "no space left on device" if err.errno == errno.ENOSPC else "disk quota exceeded"
    return XiqaError(f"{where}: {what} while writing it; nothing was half-written and its previous "
                     "version, if any, is intact (free some space, then rerun)")


def reserve(path: Path) -> None:
    """Allocate every block of file ``path`` now (``posix_fallocate``), so that a disk too small
    for it is an ENOSPC here rather than a SIGBUS later, when a memory map of it is written."""
    with open(path, "r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size:
            os.posix_fallocate(fh.fileno(), 0, size)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temp file, then rename)."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)


def read_pointer(path: Path) -> dict:
    """A model or evaluation pointer; a missing or malformed file names itself."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise XiqaError(f"{path}: not found (run the stage that writes it first: `dvc repro`)") from None
    except json.JSONDecodeError as err:
        raise XiqaError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise XiqaError(f"{path}: expected a JSON object")
    if data.get("status") == "skipped":
        return data
    missing = [k for k in ("run_id", "model_uri") if not data.get(k)]
    if missing:
        raise XiqaError(f"{path}: missing {', '.join(missing)}")
    return data
