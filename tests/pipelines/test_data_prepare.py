"""Stages `data` and `prepare` under real DVC in a throw-away git repository."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

try:
    from tests.conftest import BIN, run
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, run
from xiqa.data import phantoms

TINY = {"data": {"objectcxr": {"n_images": 20, "min_size": 48, "max_size": 64},
                 "lvot": {"n_patients": 6, "slices_per_patient": 4, "size": 48}}}
STAGES = ("prepare@objectcxr", "prepare@lvot")


@pytest.mark.slow
def test_dvc_repro_builds_data_and_prepare_then_reports_up_to_date(make_project):
    root = make_project(TINY)
    first = run(root, str(BIN / "dvc"), "repro", *STAGES)
    assert "Running stage 'data@objectcxr'" in first.stdout
    for ds, n in (("objectcxr", 20), ("lvot", 24)):
        prepared = root / "data" / "prepared" / ds
        splits = pd.read_csv(prepared / "splits.csv", dtype=str)
        assert len(splits) == n and set(splits["split"]) == {"train", "val", "test"}
        assert splits.groupby("patient_id")["split"].nunique().max() == 1
        assert (prepared / "boxes.csv").is_file() and (prepared / "images.csv").is_file()
    assert (root / "data" / "raw" / "objectcxr" / "train.csv").is_file()
    assert (root / "data" / "raw" / "lvot" / "manifest.csv").is_file()
    second = run(root, str(BIN / "dvc"), "repro", *STAGES)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout


@pytest.mark.slow
def test_data_stage_imports_a_real_folder_and_refuses_a_bad_source(make_project):
    source = {"data": {"objectcxr": {"source": "external/ocxr"}}}
    root = make_project(source)
    phantoms.write_objectcxr(root / "external" / "ocxr", n_images=10, min_size=40, max_size=48, seed=9)
    run(root, str(BIN / "python"), "-m", "pipelines.data", "--dataset", "objectcxr", "--no-progress")
    raw = root / "data" / "raw" / "objectcxr"
    assert (raw / "train.csv").read_bytes() == (root / "external/ocxr/train.csv").read_bytes()
    assert len(list((raw / "train").iterdir())) == 9

    (root / "external" / "ocxr" / "dev" / "00009.jpg").write_bytes(b"broken")
    failed = run(root, str(BIN / "python"), "-m", "pipelines.data", "--dataset", "objectcxr",
                 "--no-progress", check=False)
    assert failed.returncode == 2
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("xiqa: error: ") and "dev/00009.jpg" in line and "cannot decode" in line
    assert (raw / "train.csv").is_file()  # the previous import is untouched


@pytest.mark.parametrize("stage", ["data", "prepare"])
def test_stage_has_help(stage):
    from typer.testing import CliRunner

    module = __import__(f"pipelines.{stage}", fromlist=["app"])
    result = CliRunner().invoke(module.app, ["--help"])
    assert result.exit_code == 0 and "--dataset" in result.output
