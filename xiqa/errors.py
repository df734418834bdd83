"""User-facing errors.

A :class:`XiqaError` carries one sentence naming the file, row or value at fault. The CLI and
the pipeline stages print it without a traceback and exit with status 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class XiqaError(Exception):
    """A problem with the user's input, data, parameters or environment (not a bug)."""

    exit_code: int = 2
