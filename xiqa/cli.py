"""The ``xiqa`` command: user commands only (audits, reports, registry look-ups).

Every command has ``--help``. A user error (:class:`xiqa.errors.XiqaError`) prints one sentence
to stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

import typer

from xiqa.errors import XiqaError

app = typer.Typer(
    name="xiqa",
    help="Explainable medical image-quality assessment: saliency, Pointing Game, MLflow registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Look up and pull registered models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def fail(message: str, code: int = 2) -> None:
    """Print one sentence to stderr and exit non-zero."""
    typer.echo(f"xiqa: error: {message}", err=True)
    raise typer.Exit(code)


def run_guarded(fn: Callable[[], None]) -> None:
    """Run ``fn``; turn a :class:`XiqaError` into a one-line message and a non-zero exit."""
    try:
        fn()
    except XiqaError as err:
        fail(str(err), err.exit_code)


@app.callback()
def _root() -> None:
    """xiqa: train, explain and audit image-quality classifiers (see README.md)."""


# --- models (issue: training and registry) ------------------------------------------------


# --- report / explain (issue: evaluation and report) --------------------------------------


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except XiqaError as err:  # raised outside a guarded command
        typer.echo(f"xiqa: error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
