"""Fixtures of the training tests: a tiny prepared dataset (see tiny_data.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tiny_data import write_tiny_dataset


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A project folder with ``params.yaml`` absent (tests pass Params directly) and a tiny
    prepared ``objectcxr``."""
    return write_tiny_dataset(tmp_path / "proj")


@pytest.fixture
def tiny_data() -> Callable[..., Path]:
    return write_tiny_dataset
