"""params.yaml validation: every problem names the key at fault."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from xiqa.errors import XiqaError
from xiqa.params import load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_the_repository_params_yaml_is_valid_and_grouped_by_stage():
    params = load_params(REPO / "params.yaml")
    assert params.data.objectcxr.source == "phantom"
    assert params.prepare.fractions == (0.4, 0.1, 0.5)  # the demo: half of the data is test data
    # SPEC 2.3: at least 60 scored (positive) test images per model; labels are balanced and the
    # split is stratified by label, so half of the test split has boxes
    cxr, lvot = params.data.objectcxr, params.data.lvot
    assert cxr.n_images * params.prepare.test / 2 >= 60
    assert lvot.n_patients * lvot.slices_per_patient * params.prepare.test / 2 >= 60
    assert parse_params({}).prepare.fractions == (0.8, 0.1, 0.1)  # the paper's, the schema default


@pytest.mark.parametrize("data, fragments", [
    ({"data": {"objectcxr": {"n_imgs": 3}}}, ["data.objectcxr.n_imgs", "unknown key"]),
    ({"prepare": {"train": "most"}}, ["prepare.train", "'most'"]),
    ({"data": {"lvot": {"size": 8}}}, ["data.lvot.size", "greater than or equal to 32"]),
    ({"data": {"seed": [1]}}, ["data.seed"]),
    ({"data": {"lvot": {"source": " "}}}, ["data.lvot.source", "phantom"]),
    ({"data": {"objectcxr": {"min_size": 300, "max_size": 200}}}, ["data.objectcxr", "min_size (300)"]),
    ({"prepare": {"train": 0.7}}, ["prepare", "train + val + test must be 1"]),
    ({"stages": {}}, ["stages", "unknown key"]),
])
def test_a_bad_value_names_its_key(data, fragments):
    with pytest.raises(XiqaError) as err:
        parse_params(data, "params.yaml")
    message = str(err.value)
    assert message.startswith("params.yaml: ")
    for fragment in fragments:
        assert fragment in message


def test_load_params_names_the_file_for_bad_yaml_and_missing_files(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(XiqaError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(XiqaError, match="no such parameters file"):
        load_params(tmp_path / "missing.yaml")
    bad.write_text(yaml.safe_dump({"prepare": {"seed": "one"}}))
    with pytest.raises(XiqaError, match=r"params.yaml: prepare.seed"):
        load_params(bad)
