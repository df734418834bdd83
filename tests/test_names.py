"""Each name set has one source (xiqa/schema.py); the tables keyed by those names cover exactly
them, and the params and stage options accept exactly them."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from xiqa import saliency, schema as S
from xiqa.data.datasets import DATASET_SPECS, dataset_spec
from xiqa.errors import XiqaError
from xiqa.models import zoo
from xiqa.models.weights import IMAGENET_FILES
from xiqa.params import Params, parse_params
from xiqa.saliency import methods as M
from xiqa.tracking.registry import pip_requirements


def test_every_table_keyed_by_a_name_covers_exactly_the_schema_names() -> None:
    assert tuple(DATASET_SPECS) == S.DATASETS
    assert set(zoo.ARCH_SPECS) == set(zoo.CASCADES) == set(zoo.PAPER_DEPTH) == set(IMAGENET_FILES) == set(S.ARCHS)
    assert tuple(Params().evaluate.tolerance_at.model_dump()) == S.DATASETS
    assert tuple(Params().train.model_dump()) == S.DATASETS
    assert set(S.METHOD_LABELS) == set(S.METHODS)
    assert set(S.CONDITION_LABELS) == set(S.CONDITIONS) and set(S.DATASET_LABELS) == set(S.DATASETS)
    assert set(S.RANDOM_CONDITIONS) < set(S.CONDITIONS)
    # the NormGrad names are the product of the VILs and the two layer choices
    assert {m for m in S.METHODS if m.startswith("normgrad_")} == {
        f"normgrad_{v}_{k}" for v in M.VILS for k in ("single", "multi")}


def test_explain_computes_every_method_the_schema_names() -> None:
    import torch

    torch.manual_seed(0)
    model = zoo.estimate_bn_statistics(zoo.build("resnet34"), [torch.randn(2, 3, 32, 32)])
    maps = saliency.explain(model, torch.randn(2, 3, 32, 32), arch="resnet34")
    assert tuple(maps) == S.METHODS and saliency.METHODS is S.METHODS


def test_params_accept_exactly_the_schema_names() -> None:
    ok = parse_params({"grid": {"models": [{"dataset": d, "arch": a} for d in S.DATASETS for a in S.ARCHS],
                                "randomised": list(S.RANDOM_CONDITIONS)},
                       "evaluate": {"methods": list(S.METHODS)}, "report": {"formats": list(S.REPORT_FORMATS)}})
    assert len(ok.grid.models) == len(S.DATASETS) * len(S.ARCHS)
    assert ok.report.formats == list(S.REPORT_FORMATS) == Params().report.formats
    for bad, key in (({"grid": {"models": [{"dataset": "chest", "arch": "resnet34"}]}}, "grid.models.0.dataset"),
                     # any torchvision classifier is an arch (issue 26): only a malformed name is refused
                     ({"grid": {"models": [{"dataset": "lvot", "arch": "VGG 16"}]}}, "grid.models.0.arch"),
                     ({"grid": {"randomised": ["trained"]}}, "grid.randomised.0"),
                     ({"evaluate": {"methods": ["gradcam", "lime"]}}, "evaluate.methods.1"),
                     ({"report": {"formats": ["pdf"]}}, "report.formats.0")):
        with pytest.raises(XiqaError, match=key.replace(".", r"\.")):
            parse_params(bad)


@pytest.mark.parametrize("stage, args", [("data", []), ("prepare", []), ("train", ["--arch", "resnet34", "--seed", "1"]),
                                         ("randomise", ["--arch", "resnet34", "--condition", "fr"])])
def test_stage_options_refuse_a_name_outside_the_schema_before_reading_params(stage: str, args: list[str]) -> None:
    import importlib

    app = importlib.import_module(f"pipelines.{stage}").app
    result = CliRunner().invoke(app, ["--dataset", "chest", *args])
    assert result.exit_code == 2 and "chest" in result.output
    for name in S.DATASETS:
        assert name in result.output


def test_unknown_dataset_is_named() -> None:
    assert dataset_spec("lvot").name == "lvot"
    with pytest.raises(XiqaError, match="unknown dataset 'chest'; choose one of objectcxr, lvot"):
        dataset_spec("chest")


@pytest.mark.parametrize("arch", S.ARCHS)
def test_logged_model_requirements_follow_the_arch_spec_library(arch: str) -> None:
    library = zoo.spec(arch).library
    reqs = pip_requirements(library)
    assert reqs[:2] == [f"torch=={version('torch').split('+')[0]}",
                        f"torchvision=={version('torchvision').split('+')[0]}"]
    assert reqs[2:] == ([] if library == "torchvision" else [f"{library}=={version(library)}"])
