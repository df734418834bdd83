"""scripts/function_sizes.py: every function counted with its qualified name and line count."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import function_sizes as fs  # noqa: E402

SOURCE = '''
def top():
    def inner():
        return 1
    return inner


class K:
    @staticmethod
    def method(x):
        if x:
            return 1
        return 2
'''


def test_nested_functions_and_methods_are_counted_from_def_to_their_last_line() -> None:
    assert fs.functions_in(SOURCE, "m.py") == [fs.Function("top", "m.py", 4), fs.Function("top.inner", "m.py", 2),
                                               fs.Function("K.method", "m.py", 4)]


def test_the_report_of_head_and_an_unknown_revision() -> None:
    text = fs.report("HEAD")
    assert "functions in xiqa/, median" in text and len(text.splitlines()) == 1 + fs.TOP
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "function_sizes.py"), "no-such-rev"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "git cannot read revision 'no-such-rev'" in done.stderr
