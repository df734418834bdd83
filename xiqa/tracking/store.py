"""The MLflow tracking store of a project: which store, its one-time creation, whether a server
answers, and the project's experiments.

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
import time
from pathlib import Path
from typing import Any

from xiqa.errors import XiqaError

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
