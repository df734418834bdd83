"""Function sizes of xiqa/ at git revisions: ``python scripts/function_sizes.py REV [REV ...]``.

For each revision, every ``.py`` file under ``xiqa/`` is read with ``git show REV:path`` (the work
tree is never looked at) and parsed with :mod:`ast`. Every function and method counts, nested
ones separately, its length being its lines from ``def`` to its last line (decorators excluded).
Printed per revision: the number of functions, the median length, how many are longer than 50
lines, and the five longest (qualified name, file, lines).
"""

from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
import sys
from typing import NamedTuple

LONG = 50
TOP = 5


class Function(NamedTuple):
    """One function or method: ``Class.method`` / ``outer.inner`` name, file, length in lines."""

    name: str
    path: str
    lines: int


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def functions_in(source: str, path: str) -> list[Function]:
    """Every function of one module's ``source``, nested ones included."""
    found: list[Function] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                found.append(Function(name, path, (child.end_lineno or child.lineno) - child.lineno + 1))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=path), "")
    return found


def functions_at(rev: str, folder: str = "xiqa") -> list[Function]:
    """Every function in the ``.py`` files under ``folder`` at git revision ``rev``."""
    paths = [p for p in _git("ls-tree", "-r", "--name-only", rev, "--", folder + "/").splitlines()
             if p.endswith(".py")]
    return [f for p in paths for f in functions_in(_git("show", f"{rev}:{p}"), p)]


def report(rev: str) -> str:
    """The figures of one revision, as printed."""
    found = functions_at(rev)
    if not found:
        return f"{rev}: no Python functions under xiqa/"
    commit = _git("rev-parse", "--short", rev).strip()
    sizes = [f.lines for f in found]
    out = [f"{rev} ({commit}): {len(found)} functions in xiqa/, median {statistics.median(sizes):g} lines, "
           f"{sum(n > LONG for n in sizes)} longer than {LONG} lines; the {TOP} longest:"]
    for f in sorted(found, key=lambda f: (-f.lines, f.path, f.name))[:TOP]:
        out.append(f"  {f.lines:4d}  {f.name}  ({f.path})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print the figures of every revision given; a revision git does not know is exit 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="+", metavar="REV", help="git revisions (commit, branch, tag)")
    args = parser.parse_args(argv)
    for rev in args.revs:
        try:
            print(report(rev))
        except subprocess.CalledProcessError as err:
            print(f"function_sizes.py: error: git cannot read revision {rev!r}: {err.stderr.strip()}",
                  file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
