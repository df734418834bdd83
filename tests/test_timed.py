"""scripts/timed.py: per-stage seconds from the `Running stage` marks of a dvc repro log."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from timed import stage_seconds  # noqa: E402


def test_each_stage_lasts_until_the_next_mark_and_foreach_items_add_up() -> None:
    marks = [(1.0, "data"), (3.0, "data"), (10.0, "train"), (40.0, "report")]
    assert stage_seconds(marks, 45.0) == {"data": 2.0 + 7.0, "train": 30.0, "report": 5.0}


def test_an_up_to_date_repro_runs_no_stage_and_has_no_stage_times() -> None:
    assert stage_seconds([], 2.7) == {}
