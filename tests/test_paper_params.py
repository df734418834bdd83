"""params-paper.yaml: the paper's recipe, equal to the schema's defaults."""

from __future__ import annotations

from pathlib import Path

from xiqa.params import Params, load_params

PAPER = Path(__file__).resolve().parents[1] / "params-paper.yaml"


def test_params_paper_spells_out_the_schema_defaults_of_every_stage_it_names() -> None:
    paper, defaults = load_params(PAPER), Params()
    for stage in ("data", "prepare", "grid", "train", "randomise"):
        assert getattr(paper, stage) == getattr(defaults, stage), stage
    assert paper.device == "cuda"
    cxr, lvot = paper.train.objectcxr, paper.train.lvot
    assert (cxr.image_size, cxr.epochs, cxr.batch_size, cxr.lr, cxr.step_size) == (600, 20, 16, 0.005, 5)
    assert (lvot.image_size, lvot.epochs, lvot.batch_size, lvot.lr, lvot.step_size) == (224, 60, 64, 0.0002, None)
    assert cxr.pretrained and cxr.augment and lvot.pretrained and lvot.augment
    assert paper.prepare.fractions == (0.8, 0.1, 0.1)
