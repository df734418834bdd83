"""The life cycle of one MLflow run: started after its dead predecessors are reaped, ended
FINISHED, FAILED or KILLED (SIGTERM, Ctrl-C) with no model version left by a run that did not
finish, and marked complete when its stage wrote its last output."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xiqa.errors import XiqaError
from xiqa.tracking.owners import COMPLETE_TAG, process_tags, reap_stale_runs
from xiqa.tracking.store import _RETRIES_ENV, experiment_id, experiment_name, unreachable

if TYPE_CHECKING:  # mlflow takes seconds to import: only where a run really starts
    from mlflow.entities import Run


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
