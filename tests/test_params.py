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
    assert params.prepare.fractions == (0.8, 0.1, 0.1)  # the demo: the paper's split of more phantoms
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
    ({"evaluate": {"tolerance_at": {"objectcxr": 0}}}, ["evaluate.tolerance_at.objectcxr", "greater than or equal to 1"]),
    ({"evaluate": {"tolerance_at": {"chest": 600}}}, ["evaluate.tolerance_at.chest", "unknown key"]),
    ({"evaluate": {"tolerance_at": {"lvot": "big"}}}, ["evaluate.tolerance_at.lvot", "'big'"]),
    ({"evaluate": {"tolerance": 0}}, ["evaluate.tolerance", "greater than 0"]),
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


def test_tau_is_the_papers_15_px_scaled_to_the_input_size():
    ev = parse_params({}).evaluate  # the paper: 15 px at 600 px (Object-CXR) and 224 px (LVOT)
    assert (ev.tolerance, ev.tolerance_at.objectcxr, ev.tolerance_at.lvot) == (15.0, 600, 224)
    assert ev.tau_px("objectcxr", 128) == 3.2  # 15 * 128 / 600, one rounding: the double nearest 3.2
    assert ev.tau_px("lvot", 112) == 7.5
    assert ev.tau_px("objectcxr", 600) == 15.0 and ev.tau_px("lvot", 224) == 15.0
    assert ev.tau_px("lvot", 448) == 30.0
    other = parse_params({"evaluate": {"tolerance": 10, "tolerance_at": {"objectcxr": 128}}}).evaluate
    assert other.tau_px("objectcxr", 64) == 5.0 and other.tau_px("lvot", 112) == 10 * 112 / 224
    with pytest.raises(XiqaError, match="unknown dataset 'mnist'"):
        ev.tau_px("mnist", 128)
    with pytest.raises(XiqaError, match="positive"):
        ev.tau_px("lvot", 0)


def test_the_repository_params_yaml_plays_the_papers_geometry_at_the_demo_sizes():
    params = load_params(REPO / "params.yaml")
    ev = params.evaluate
    assert ev.tau_px("objectcxr", params.train.objectcxr.image_size) == 15 * params.train.objectcxr.image_size / 600
    assert ev.tau_px("lvot", params.train.lvot.image_size) == 15 * params.train.lvot.image_size / 224
