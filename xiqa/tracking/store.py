"""The MLflow tracking store of a project, its experiments and the life cycle of one run.

Embedded default: ``sqlite:///<project>/mlflow.db`` with artifacts under ``<project>/mlruns/``,
both from the project's resolved absolute path, so a stage gives the same store whatever its
working directory. ``MLFLOW_TRACKING_URI`` replaces it: a tracking server (``http(s)://...``,
which decides where artifacts go), or another sqlite database (artifacts in ``mlruns/`` beside
it; useful for ``dvc exp run --temp/--queue``, whose workspaces are temporary copies). The
deprecated ``./mlruns`` *file* store is never used.

A fresh sqlite database takes about 2 s to create, and several processes creating it at once
race on the schema (SPEC 10), so :func:`ensure_store` creates or upgrades it once, under a file
lock, before any run touches it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xiqa.errors import XiqaError

if TYPE_CHECKING:  # mlflow takes seconds to import: only where a run really starts
    from mlflow.entities import Run

TRACKING_ENV = "MLFLOW_TRACKING_URI"
REGISTRY_ENV = "MLFLOW_REGISTRY_URI"
USER_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlruns"
STUDY_EXPERIMENT = "xiqa-study"


def embedded_uri(root: Path) -> str:
    """``sqlite:////abs/project/mlflow.db``: the embedded store of the project at ``root``."""
    return f"sqlite:///{(Path(root).resolve() / DB_NAME).as_posix()}"


def tracking_uri(root: Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the project's embedded sqlite store. A file store
    (``file:`` or a bare path) is refused: MLflow deprecated it."""
    uri = os.environ.get(TRACKING_ENV) or embedded_uri(root)
    if "://" not in uri or uri.startswith("file:"):
        raise XiqaError(f"{TRACKING_ENV}={uri}: MLflow's file store is deprecated; use a "
                        "database (sqlite:///path/mlflow.db) or a tracking server (http://host:port)")
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).resolve()


def artifact_root(root: Path, uri: str | None = None) -> str | None:
    """Where runs of store ``uri`` (default: the project's) keep artifacts: ``mlruns/`` beside a
    sqlite database (``file:///abs/project/mlruns`` for the embedded store), None for a
    server or other database, whose own configuration decides."""
    db = sqlite_path(uri or embedded_uri(root))
    return (db.parent / ARTIFACTS_DIR).as_uri() if db is not None else None


def experiment_name(dataset: str) -> str:
    """``xiqa-<dataset>``: the experiment of every run on one dataset."""
    return f"xiqa-{dataset}"


def _schema_ready(db: Path) -> bool:
    """Cheap check without importing mlflow: the database has MLflow's tables and a revision."""
    if not db.is_file() or db.stat().st_size == 0:
        return False
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return bool(row) and {"experiments", "runs", "registered_models", "model_versions"} <= names


def ensure_store(root: Path) -> str:
    """Point MLflow at the project's store, creating a sqlite database's schema once.

    Safe to call from many processes at once: creation happens under an exclusive file lock
    (``mlflow.db-init.lock`` beside the database) and later callers find the schema ready.
    Returns the tracking URI. (An existing database of an older MLflow is upgraded by MLflow
    itself when it opens it, as ``mlflow db upgrade`` would.)
    """
    import mlflow

    root = Path(root).resolve()
    uri = tracking_uri(root)
    if uri.startswith(("http://", "https://")):
        configure_retries(uri)
        check_reachable(uri)
    db = sqlite_path(uri)
    if db is not None and not _schema_ready(db):
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.parent / f"{db.name}-init.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _schema_ready(db):  # another process may have finished meanwhile
                _create_schema(uri, artifact_root(root, uri))
    # mlflow.set_tracking_uri / set_registry_uri also export MLFLOW_TRACKING_URI /
    # MLFLOW_REGISTRY_URI for subprocesses; put the user's own values back, or a later project
    # in this process (and its subprocesses) would inherit this store.
    before = {name: os.environ.get(name) for name in (TRACKING_ENV, REGISTRY_ENV)}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return uri


RETRY_ENV = "XIQA_TRACKING_RETRY_S"
DEFAULT_RETRY_S = 120.0
_RETRIES_ENV, _BACKOFF_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
_MAX_RETRIES = 10  # MLflow refuses more (_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT)
_RETRYING: dict[str, Any] = {}  # the server whose retries are announced, and when the last one was


def retry_seconds() -> float:
    """``$XIQA_TRACKING_RETRY_S`` (default 120): how long a stage keeps retrying a tracking
    server that does not answer, or answers 5xx (its database down)."""
    raw = os.environ.get(RETRY_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_RETRY_S
    except ValueError:
        raise XiqaError(f"{RETRY_ENV}={raw}: not a number of seconds") from None
    if value < 0:
        raise XiqaError(f"{RETRY_ENV}={raw}: must be 0 or more seconds")
    return value


def retry_schedule(seconds: float) -> tuple[int, int]:
    """``(max_retries, backoff_factor)`` for MLflow's REST client that keep retrying for at least
    ``seconds``: urllib3 retries the first failure at once and waits ``factor * 2**(k-1)`` s
    before retry k >= 2 (plus up to MLFLOW_HTTP_REQUEST_BACKOFF_JITTER s), so n retries of
    factor f span f * (2**n - 2) s. The factor stays 1 (short waits while the outage is short)
    unless ten retries, MLflow's limit, need more."""
    if seconds <= 0:
        return 0, 1
    factor = max(1, -(-int(seconds) // (2 ** _MAX_RETRIES - 2)))
    retries = next(n for n in range(1, _MAX_RETRIES + 1) if factor * (2 ** n - 2) >= seconds or n == _MAX_RETRIES)
    return retries, factor


def configure_retries(uri: str) -> None:
    """Let MLflow's own REST client (urllib3's ``Retry``: refused connections, timeouts and
    HTTP 408/429/500/502/503/504) ride out an outage of the server at ``uri`` for
    ``$XIQA_TRACKING_RETRY_S`` seconds, unless the user set MLflow's retry variables; announce
    the first retry of an outage in one line on stderr instead of urllib3's warning per retry."""
    retries, factor = retry_schedule(retry_seconds())
    os.environ.setdefault(_RETRIES_ENV, str(retries))
    os.environ.setdefault(_BACKOFF_ENV, str(factor))
    _RETRYING["uri"] = uri
    if _RETRYING.get("installed"):
        return
    _RETRYING["installed"] = True
    logging.getLogger("urllib3.connectionpool").addFilter(_QuietRetries())
    retry_log = logging.getLogger("urllib3.util.retry")  # logs every retry, at DEBUG
    retry_log.setLevel(logging.DEBUG)
    retry_log.propagate = False
    retry_log.addHandler(_AnnounceRetry())


class _QuietRetries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying (")


class _AnnounceRetry(logging.Handler):
    """One line per outage: the first retry after a quiet spell longer than the retry budget."""

    def emit(self, record: logging.LogRecord) -> None:
        import sys

        if not str(record.msg).startswith("Incremented Retry") or not isinstance(record.args, tuple):
            return
        now, last = time.monotonic(), _RETRYING.get("last")
        _RETRYING["last"] = now
        budget = retry_seconds()
        if last is not None and now - last < max(budget, 10.0):
            return
        history = getattr(record.args[-1], "history", ()) or ()
        cause = history[-1] if history else None
        if cause is not None and cause.status:
            reason = f"HTTP {cause.status}"
        elif cause is not None and cause.error is not None:
            text = str(cause.error).lower()
            reason = ("connection refused" if "refused" in text else
                      "connection dropped" if "aborted" in text or "reset" in text or "disconnected" in text else
                      "no answer in time" if "timed out" in text or "timeout" in text else
                      type(cause.error).__name__)
        else:
            reason = "no answer"
        sys.stderr.write(f"xiqa: tracking server {_RETRYING.get('uri', '?')} unreachable ({reason}); "
                         f"retrying for up to {budget:g} s ({RETRY_ENV})\n")
        sys.stderr.flush()


def unreachable(err: BaseException) -> XiqaError | None:
    """The one sentence for a request MLflow gave up on after its retries (an ``MlflowException``
    "API request to ... failed with ...": no answer, or 5xx until the end); None for any other
    error. Duck-typed, like :func:`refusal`."""
    import re

    text = str(getattr(err, "message", None) or err)
    if not re.match(r"API request to \S+ failed (with|to return)", text) or \
            getattr(err, "error_code", "INTERNAL_ERROR") not in ("INTERNAL_ERROR", None):
        return None
    uri = os.environ.get(TRACKING_ENV) or _RETRYING.get("uri") or "the tracking server"
    status = re.search(r"too many (\d\d\d) error responses", text)
    why = f"it answered HTTP {status[1]}: its database may be down" if status else "no connection"
    return XiqaError(f"{TRACKING_ENV}={uri}: the tracking server did not come back within "
                     f"{RETRY_ENV}={retry_seconds():g} s ({why}); this stage's MLflow run keeps no model "
                     "version and is marked FAILED, or KILLED by the next `dvc repro` once the server is back")


PROBE_TIMEOUT_S = 5.0
_REACHABLE: set[str] = set()  # servers that answered in this process (ensure_store runs per run)


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when a tracking server cannot be reached: MLflow itself retries with backoff for
    minutes before it gives up. Any HTTP answer to ``/health`` (even 401 or 404) counts as
    reachable; only a refused connection, an unknown host or a timeout is an error. A server
    with basic auth must then accept the login in the environment. A server that answered once
    is not probed again in this process."""
    import urllib.error
    import urllib.request

    if uri in _REACHABLE:
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # the server answered
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise XiqaError(f"{TRACKING_ENV}={uri}: tracking server not reachable ({reason}); start it "
                        f"or unset {TRACKING_ENV} to use the project's embedded store") from None
    _check_login(uri, timeout)
    _REACHABLE.add(uri)


def _check_login(uri: str, timeout: float) -> None:
    """One authenticated read: a server with basic auth answers 401 to missing or wrong
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (which MLflow itself sends with
    every request), and MLflow would report that as a long REST error deep in a stage."""
    import base64
    import urllib.error
    import urllib.request

    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    request = urllib.request.Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            pass
    except urllib.error.HTTPError as err:
        if err.code != 401:
            return  # not ours to judge here: MLflow reports it with its own message
        if user and password:
            raise XiqaError(f"{TRACKING_ENV}={uri}: the tracking server rejected the login of "
                            f"{USER_ENV}={user} (HTTP 401); check {PASSWORD_ENV}") from None
        raise XiqaError(f"{TRACKING_ENV}={uri}: the tracking server requires a login (HTTP 401); "
                        f"set {USER_ENV} and {PASSWORD_ENV}") from None
    except (urllib.error.URLError, OSError):
        return  # it answered /health a moment ago; let MLflow retry and report


def refusal(err: BaseException) -> XiqaError | None:
    """The one sentence for a request the tracking server refused for lack of permission (an
    ``MlflowException`` with error code ``PERMISSION_DENIED``, HTTP 403), naming the server, the
    user and the endpoint; None for any other error. Duck-typed, so an error boundary can ask
    without importing mlflow."""
    import re

    if getattr(err, "error_code", None) != "PERMISSION_DENIED":
        return None
    uri = os.environ.get(TRACKING_ENV) or "the tracking server"
    user = os.environ.get(USER_ENV) or "(no login)"
    endpoint = re.search(r"endpoint (\S+)", str(err))
    what = f"the request {endpoint[1]}" if endpoint else "the request"
    return XiqaError(f"{TRACKING_ENV}={uri}: the tracking server refused {what} of {USER_ENV}={user} "
                     "(HTTP 403, permission denied); ask its admin for READ (to read) or EDIT (to log runs "
                     "and register models) on the experiment or model")


def open_client(root: Path):
    """An ``MlflowClient`` on the project's store, for read-only commands: the embedded
    database must already exist (it is not created just to be found empty)."""
    import mlflow

    root = Path(root).resolve()
    uri = tracking_uri(root)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise XiqaError(f"{db}: no MLflow store here; run `dvc repro` in the project first, "
                        f"or set {TRACKING_ENV} to a tracking server")
    return mlflow.MlflowClient(ensure_store(root))


def _create_schema(uri: str, artifacts: str | None) -> None:
    """Create (or migrate) the tracking and registry tables; both share one database."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    try:
        SqlAlchemyStore(uri, artifacts)
        RegistryStore(uri)
    except Exception as err:  # a locked, corrupt or foreign file: name it
        raise XiqaError(f"{uri}: cannot create or open the MLflow database "
                        f"({type(err).__name__}: {err})") from None


def experiment_id(root: Path, name: str) -> str:
    """Id of experiment ``name``, creating it (artifacts under ``<project>/mlruns/<name>``
    for the embedded store) if needed; a concurrent creation by another process is fine."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = ensure_store(root)
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    base = artifact_root(root, uri)
    location = f"{base}/{name}" if base is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another process won the race
        if found is None:
            raise
        return found.experiment_id


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


class Terminated(BaseException):
    """Raised by the SIGTERM handler of :func:`tracked_run` (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` swallows it)."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, _frame: Any) -> None:
        raise Terminated(f"terminated by signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- runs left RUNNING
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


def mark_complete(run_ids: list[str]) -> None:
    """Set ``COMPLETE_TAG`` "true" on runs ``run_ids`` (on the store :func:`ensure_store` set):
    the stage that made them wrote its last output, so a later run of it is a rerun, not the
    retry of an interrupted one. Call it last in the stage."""
    if not run_ids:  # nothing logged (every seed skipped): no reason to import mlflow
        return
    import mlflow

    client = mlflow.MlflowClient()
    for run_id in run_ids:
        client.set_tag(run_id, COMPLETE_TAG, "true")


@contextmanager
def experiment_run(experiment: str, run_name: str, tags: dict[str, str],
                   params: dict[str, Any] | None = None) -> Iterator[Run]:
    """An MLflow run in experiment id ``experiment`` with ``tags`` (plus :func:`process_tags`)
    and ``params``, on the store :func:`ensure_store` set.

    It ends FINISHED when the block completes, FAILED on an exception and KILLED on SIGTERM or
    Ctrl-C (the exception is re-raised in every case); a run that does not finish keeps no
    registered model version. Runs of the same name left RUNNING by a killed process are marked
    KILLED first (:func:`reap_stale_runs`), so an interrupted stage never leaves a RUNNING run
    behind once it has been run again (nor, with ``COMPLETE_TAG`` in ``tags``, a second version).
    """
    import mlflow

    reap_stale_runs(mlflow.MlflowClient(), experiment, run_name)
    with _sigterm_raises():
        run = mlflow.start_run(experiment_id=experiment, run_name=run_name,
                               tags={**tags, **process_tags()})
        try:
            if params:
                mlflow.log_params({k: _param(v) for k, v in params.items()})
            yield run
        except (Terminated, KeyboardInterrupt):
            _abandon(run, "KILLED")
            raise
        except BaseException as err:
            _abandon(run, "FAILED", gone=unreachable(err) is not None)
            full = _artifacts_full(err, run)
            if full is not None:
                raise full from None
            raise
        mlflow.end_run(status="FINISHED")


def _artifacts_full(err: BaseException, run: Run) -> XiqaError | None:
    """One sentence for a full disk met while MLflow wrote local artifacts of ``run`` (its
    ``OSError`` rarely names the file): the run's artifact folder, and what became of the run."""
    import errno

    from xiqa.io import disk_full

    if disk_full(err) is None:
        return None
    uri = run.info.artifact_uri or ""
    where = uri.removeprefix("file://") if uri.startswith("file://") else (getattr(err, "filename", None) or uri)
    what = "no space left on device" if getattr(err, "errno", None) == errno.ENOSPC else "disk quota exceeded"
    return XiqaError(f"{where}: {what} while MLflow wrote the run's artifacts; run {run.info.run_id} is "
                     "marked FAILED and keeps no model version (free some space, then rerun)")


def _abandon(run: Run, status: str, gone: bool = False) -> None:
    """End ``run`` with ``status`` after deleting its model versions. ``gone``: the tracking
    server did not come back within the retry budget; one more try each (MLflow retries once),
    and a run the server cannot take is left RUNNING for the next start to reap (KILLED)."""
    import mlflow

    from xiqa.tracking.registry import discard_versions

    saved = os.environ.get(_RETRIES_ENV)
    if gone:
        os.environ[_RETRIES_ENV] = "1"
    try:
        try:
            discard_versions(mlflow.MlflowClient(), run.info.run_id)
        except Exception as err:  # the original error matters more; no pointer names that version
            if not gone:
                logging.getLogger(__name__).warning("run %s: could not delete its model versions (%s)",
                                                    run.info.run_id, err)
        try:
            mlflow.end_run(status=status)
        except Exception:
            if not gone:
                raise
    finally:
        if gone:
            if saved is None:
                os.environ.pop(_RETRIES_ENV, None)
            else:
                os.environ[_RETRIES_ENV] = saved


@contextmanager
def tracked_run(root: Path, dataset: str, run_name: str, params: dict[str, Any],
                tags: dict[str, str]) -> Iterator[Run]:
    """:func:`experiment_run` in experiment ``xiqa-<dataset>`` of the project at ``root``."""
    with experiment_run(experiment_id(root, experiment_name(dataset)), run_name, tags, params) as run:
        yield run


def _param(value: Any) -> str:
    return "None" if value is None else str(value)
