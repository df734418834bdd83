"""The loop over model pointers that the evaluate and sanity stages share (no model, no MLflow)."""

from __future__ import annotations

import json

import pytest

from xiqa import paths
from xiqa.errors import XiqaError
from xiqa.evaluation.cell import each_version
from xiqa.evaluation.run import evaluate_cell
from xiqa.io import write_json
from xiqa.params import Params


def _pointer(root, cond, seed, data):
    write_json(paths.model_pointer(root, "objectcxr", "resnet34", cond, seed), data)


def _out(root):
    return lambda c, s: paths.eval_pointer(root, "objectcxr", "resnet34", c, s)


def test_each_version_passes_skipped_models_through_and_opens_the_cell_once(tmp_path):
    _pointer(tmp_path, "trained", 1, {"run_id": "r1", "model_uri": "models:/m/1"})
    _pointer(tmp_path, "sr", 1, {"status": "skipped", "reason": "no ImageNet weights"})
    _pointer(tmp_path, "fr", 1, {"run_id": "r3", "model_uri": "models:/m/3"})
    opened, echoed = [], []

    def open_cell():
        opened.append(object())
        return opened[-1]

    got = list(each_version(tmp_path, "objectcxr", "resnet34", [("sr", 1), ("trained", 1), ("fr", 1)],
                            _out(tmp_path), open_cell, echoed.append))
    assert [(c, s, p["run_id"]) for _, p, c, s, _ in got] == [("trained", 1, "r1"), ("fr", 1, "r3")]
    assert len(opened) == 1 and all(cell is opened[0] for cell, *_ in got)
    assert [out for *_, out in got] == [_out(tmp_path)("trained", 1), _out(tmp_path)("fr", 1)]
    skipped = json.loads(_out(tmp_path)("sr", 1).read_text())
    assert skipped == {"status": "skipped", "reason": "no ImageNet weights"}
    assert echoed == ["objectcxr-resnet34 sr-s1: skipped (no ImageNet weights)"]


def test_each_version_reads_every_pointer_before_any_work(tmp_path):
    _pointer(tmp_path, "trained", 1, {"run_id": "r1", "model_uri": "models:/m/1"})
    opened = []
    with pytest.raises(XiqaError, match=r"trained/s2\.json: not found"):
        list(each_version(tmp_path, "objectcxr", "resnet34", [("trained", 1), ("trained", 2)],
                          _out(tmp_path), lambda: opened.append(1), print))
    assert opened == []


def test_each_version_of_only_skipped_models_opens_no_cell(tmp_path):
    _pointer(tmp_path, "sr", 1, {"status": "skipped"})
    got = list(each_version(tmp_path, "objectcxr", "resnet34", [("sr", 1)], _out(tmp_path),
                            lambda: pytest.fail("opened a cell for a skipped model"), lambda _: None))
    assert got == []
    assert json.loads(_out(tmp_path)("sr", 1).read_text())["reason"] == "no reason given"


def test_evaluate_cell_names_an_unknown_condition(tmp_path):
    with pytest.raises(XiqaError, match="unknown condition.*'?semi'?"):
        evaluate_cell(tmp_path, Params(), "objectcxr", "resnet34", conditions=["semi"], seeds=[1])
