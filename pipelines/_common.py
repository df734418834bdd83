"""What every stage module shares: the Typer app factory and user-error handling."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from xiqa.errors import XiqaError
from xiqa.params import Params, load_params
from xiqa.paths import project_root

# the options several stages share, declared once (their types, the Literals of xiqa.schema, are
# what Typer checks the values against)
DATASET = typer.Option(..., help="the dataset")
ARCH = typer.Option(..., help="the architecture")
SEEDS = typer.Option(None, help="only these seeds of the grid (repeatable; default: grid.seeds)")
DEVICE = typer.Option(None, help="cpu or cuda (default: `device` in params.yaml)")


def stage_app(help: str) -> typer.Typer:
    return typer.Typer(help=help, add_completion=False, pretty_exceptions_enable=False)


def params(path: Path | None = None) -> tuple[Path, Params]:
    """The project root and its validated ``params.yaml``."""
    root = project_root()
    return root, load_params(path or root / "params.yaml")


def run(app: typer.Typer) -> None:
    """Run a stage's Typer app; a user error prints one sentence and exits 2, SIGTERM inside a
    run exits 143."""
    from xiqa.tracking.runs import Terminated

    try:
        app()
    except XiqaError as err:
        typer.echo(f"xiqa: error: {err}", err=True)
        sys.exit(err.exit_code)
    except Exception as err:  # a request the server refused (HTTP 403), a full disk: the user's
        from xiqa.io import disk_full
        from xiqa.tracking.store import refusal, unreachable

        refused = refusal(err) or unreachable(err) or disk_full(err)
        if refused is None:
            raise
        typer.echo(f"xiqa: error: {refused}", err=True)
        sys.exit(refused.exit_code)
    except Terminated as err:  # SIGTERM inside an MLflow run: the run is already marked KILLED
        typer.echo(f"xiqa: {err}: the MLflow run is marked KILLED, its outputs are not written", err=True)
        sys.exit(128 + signal.SIGTERM)
