"""A fresh MLflow database per test, copied from one created per session (creating the schema
runs every MLflow migration: seconds of CPU that each test would otherwise repeat)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xiqa.tracking.store import ensure_store

    root = tmp_path_factory.mktemp("template")
    ensure_store(root)
    return root / "mlflow.db"


@pytest.fixture
def root(tmp_path: Path, store_template: Path) -> Path:
    """A project folder whose embedded store exists, with no runs or models yet. (The Default
    experiment of the copy points at the template's folder; xiqa never uses it.)"""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "params.yaml").write_text("{}\n")
    shutil.copy(store_template, project / "mlflow.db")
    from xiqa.tracking.store import ensure_store

    ensure_store(project)
    return project
