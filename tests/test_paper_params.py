"""params-paper.yaml: the paper's recipe, equal to the schema's defaults, and runnable by DVC."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from xiqa.params import DATASETS, Params, load_params

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "params-paper.yaml"


def test_params_paper_spells_out_the_schema_defaults_of_every_stage() -> None:
    paper, defaults = load_params(PAPER), Params()
    for stage in ("data", "prepare", "grid", "train", "pretrain", "randomise", "evaluate", "sanity", "report"):
        assert getattr(paper, stage) == getattr(defaults, stage), stage
    assert paper.device == "cuda"
    cxr, lvot = paper.train.objectcxr, paper.train.lvot
    assert (cxr.image_size, cxr.epochs, cxr.batch_size, cxr.lr, cxr.step_size) == (600, 20, 16, 0.005, 5)
    assert (lvot.image_size, lvot.epochs, lvot.batch_size, lvot.lr, lvot.step_size) == (224, 60, 64, 0.0002, None)
    assert cxr.pretrained and cxr.augment and lvot.pretrained and lvot.augment
    assert paper.prepare.fractions == (0.8, 0.1, 0.1)


def dvc_params(dvc_yaml: Path = REPO / "dvc.yaml") -> set[str]:
    """Every dotted parameter key the stages of ``dvc.yaml`` depend on, with the ``${item...}``
    of foreach / matrix stages expanded to each dataset (the grid's items are datasets)."""
    keys = set()
    for stage in yaml.safe_load(dvc_yaml.read_text())["stages"].values():
        for entry in stage.get("do", stage).get("params", []):
            if not isinstance(entry, str):
                raise TypeError(f"dvc.yaml: a params entry that is not a key: {entry!r}")
            keys.update(re.sub(r"\$\{item(\.model)?(\.dataset)?\}", ds, entry) for ds in DATASETS)
    return keys


def _missing(params: dict, keys: set[str]) -> list[str]:
    out = []
    for key in sorted(keys):
        node = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                out.append(key)
                break
            node = node[part]
    return out


@pytest.mark.parametrize("name", ["params.yaml", "params-paper.yaml"])
def test_every_parameter_a_dvc_stage_depends_on_is_in_the_params_file(name: str) -> None:
    keys = dvc_params()
    assert {"evaluate.tolerance_at.objectcxr", "train.lvot.image_size", "sanity", "report"} <= keys
    assert not _missing(yaml.safe_load((REPO / name).read_text()), keys), (
        f"{name}: dvc repro would refuse these stages' parameters")


def test_the_missing_parameter_check_finds_a_missing_nested_key() -> None:
    keys = {"evaluate.tolerance_at.lvot", "sanity", "device"}
    assert _missing({"device": "cpu", "evaluate": {"tolerance_at": {"objectcxr": 600}}}, keys) == [
        "evaluate.tolerance_at.lvot", "sanity"]
