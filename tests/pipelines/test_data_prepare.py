"""Stages `data` and `prepare` under real DVC in a throw-away git repository."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

try:
    from tests.conftest import BIN, run
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, run
from xiqa.data import phantoms
from xiqa.data.dataset import load_split
from xiqa.data.images import read_scan
from xiqa.data.transforms import to_cached

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
    # the image cache at train.<dataset>.image_size, byte for byte what decoding gives
    sizes = {"objectcxr": 128, "lvot": 112}  # the repository's params.yaml
    for ds, size in sizes.items():
        split = load_split(root, ds, "test", size)
        paths = pd.read_csv(root / "data/prepared" / ds / "images.csv", dtype=str).set_index("image_id")["path"]
        decoded = torch.stack([to_cached(read_scan(root / "data/raw" / ds / paths[i]), size) for i in split.ids])
        assert split.images.numpy().tobytes() == decoded.numpy().tobytes()
    # a new input size re-runs that dataset's prepare only, and its old cache goes
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["objectcxr"]["image_size"] = 96
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run(root, str(BIN / "dvc"), "repro", *STAGES)
    assert "Running stage 'prepare@objectcxr'" in third.stdout
    assert "Running stage 'prepare@lvot'" not in third.stdout
    assert sorted(p.name for p in (root / "data/prepared/objectcxr").glob("images_*")) == \
        ["images_96px.json", "images_96px.npy"]
    assert load_split(root, "objectcxr", "val", 96).images.shape[-2:] == (96, 96)


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
