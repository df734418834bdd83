"""``python -m xiqa.grid supervise CMD...`` / ``restore STAGE...``: what a grid task runs on its
node (:mod:`xiqa.grid.supervise`, :func:`xiqa.grid.node.restore_from_run_cache`)."""

from __future__ import annotations

import sys
from pathlib import Path

from xiqa.errors import XiqaError
from xiqa.grid.node import restore_from_run_cache
from xiqa.grid.supervise import supervise


def _main(argv: list[str]) -> int:
    """``python -m xiqa.grid supervise CMD...`` / ``restore STAGE...`` (what tasks run)."""
    if argv[:1] == ["supervise"] and len(argv) > 1:
        return supervise(argv[1:])
    if argv[:1] == ["restore"]:
        try:
            restore_from_run_cache(Path.cwd(), argv[1:])
        except XiqaError as err:
            print(f"xiqa: error: {err}", file=sys.stderr)
            return err.exit_code
        return 0
    print("usage: python -m xiqa.grid supervise CMD... | restore STAGE...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
