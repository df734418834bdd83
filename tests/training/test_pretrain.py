"""The `pretrain` stage's work in process on tiny data: the stand-in start is trained, logged,
registered and loaded by the same code path as ImageNet weights; real ImageNet weights win; the
trained and SR models record their start; the fractal renderer is seeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_data import write_tiny_dataset
from xiqa.data.fractals import fractal_dataset
from xiqa.errors import XiqaError
from xiqa.models import build
from xiqa.models.weights import IMAGENET_FILES, WEIGHTS_ENV, WeightsUnavailable, imagenet_state_dict, resolve_start
from xiqa.params import parse_params
from xiqa.paths import pretrain_dir
from xiqa.tracking.lookup import load_model
from xiqa.training.runs import pretrain_model, randomise_model, train_model

ARCH = "resnet34"
PRETRAIN = {"classes": 3, "per_class": 4, "image_size": 32, "epochs": 2, "batch_size": 4, "lr": 0.01}
TINY = {"train": {"objectcxr": {"image_size": 32, "epochs": 1, "batch_size": 4, "pretrained": True}},
        "grid": {"models": [{"dataset": "objectcxr", "arch": ARCH}], "seeds": [1]},
        "pretrain": PRETRAIN}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xiqa.tracking.store import ensure_store

    root = write_tiny_dataset(tmp_path_factory.mktemp("pretrain") / "proj")
    ensure_store(root)
    return root


@pytest.fixture(autouse=True)
def _no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)


def _client():
    import mlflow

    return mlflow.MlflowClient()


def test_fractal_images_are_seeded_and_each_category_is_independent_of_the_counts() -> None:
    a, la = fractal_dataset(3, 2, 24, seed=7)
    b, _ = fractal_dataset(3, 2, 24, seed=7)
    c, _ = fractal_dataset(4, 3, 24, seed=7)  # more classes and instances: the first ones stay
    assert a.dtype == np.uint8 and a.shape == (6, 1, 24, 24) and la.tolist() == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(a, b)
    assert np.array_equal(a[0:2], c[0:2]) and np.array_equal(a[2:4], c[3:5])
    assert not np.array_equal(a[0], a[2]) and a.std() > 0


def test_pretrain_trains_logs_registers_and_writes_a_torchvision_state_dict(project: Path) -> None:
    params = parse_params(TINY)
    pointer = pretrain_model(project, params, ARCH)
    folder = pretrain_dir(project, ARCH)
    assert json.loads((folder / "start.json").read_text()) == pointer
    run_id = pointer["run_id"]
    assert pointer["start"] == f"stand-in:{run_id}" and pointer["name"] == f"xiqa-pretrain-{ARCH}"
    client = _client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["route"] == "fractal"
    accuracy = client.get_metric_history(run_id, "pretext_accuracy")
    assert [m.step for m in accuracy] == [1, 2] and all(0 <= m.value <= 1 for m in accuracy)
    assert len(client.get_metric_history(run_id, "pretext_loss")) == 2
    assert {"images_per_second", "epoch_seconds", "pretext_seconds"} <= set(run.data.metrics)
    mv = client.get_model_version_by_alias(pointer["name"], "stand-in")
    assert mv.run_id == run_id and run_id in mv.description
    # the same loader as ImageNet weights: names and shapes checked, the pretext head allowed
    state = imagenet_state_dict(ARCH, folder / "weights.pt")
    assert state["fc.weight"].shape == (3, 512)
    registered = load_model(f"models:/{pointer['name']}@stand-in")
    assert torch.equal(registered.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    start = resolve_start(project, ARCH)
    assert start.label == pointer["start"] and start.path == folder / "weights.pt"


def test_trained_and_sr_models_record_the_stand_in_start_and_carry_its_backbone(project: Path) -> None:
    params = parse_params(TINY)
    pointer = pretrain_model(project, params, ARCH)
    backbone = torch.load(pretrain_dir(project, ARCH) / "weights.pt", weights_only=True)
    client = _client()
    sr = randomise_model(project, params, "objectcxr", ARCH, "sr", seed=1)
    trained = train_model(project, params, "objectcxr", ARCH, seed=1, progress=False)
    for made in (sr, trained):
        run = client.get_run(made["run_id"])
        assert run.data.params["start"] == pointer["start"] == run.data.tags["start"]
        mv = client.get_model_version(made["name"], made["version"])
        assert mv.tags["start"] == pointer["start"] and pointer["start"] in mv.description
    model = load_model(f"models:/{sr['name']}/{sr['version']}")
    assert torch.equal(model.layer1[0].conv1.weight, backbone["layer1.0.conv1.weight"])
    assert model.fc.out_features == 2


def test_real_imagenet_weights_win_over_the_stand_in(project: Path, tmp_path: Path) -> None:
    params = parse_params(TINY)
    pretrain_model(project, params, ARCH)
    torch.manual_seed(11)
    weights = tmp_path / IMAGENET_FILES[ARCH][0]
    torch.save(build(ARCH, num_classes=1000).state_dict(), weights)
    with_imagenet = parse_params({**TINY, "randomise": {"imagenet_weights": str(weights)}})
    pointer = pretrain_model(project, with_imagenet, ARCH)
    assert pointer["start"] == "imagenet" and pointer["imagenet_weights"] == str(weights)
    assert not (pretrain_dir(project, ARCH) / "weights.pt").exists()
    trained = train_model(project, with_imagenet, "objectcxr", ARCH, seed=2, progress=False)
    assert _client().get_run(trained["run_id"]).data.params["start"] == "imagenet"


def test_without_any_start_sr_is_skipped_and_pretrained_training_says_how_to_get_one(project: Path) -> None:
    params = parse_params({**TINY, "pretrain": {**PRETRAIN, "route": "none"}})
    pointer = pretrain_model(project, params, ARCH)
    assert pointer["start"] == "none" and "pretrain.route is none" in pointer["reason"]
    skipped = randomise_model(project, params, "objectcxr", ARCH, "sr", seed=3)
    assert skipped["status"] == "skipped" and "names no stand-in start" in skipped["reason"]
    with pytest.raises(WeightsUnavailable, match="names no stand-in start"):
        train_model(project, params, "objectcxr", ARCH, seed=3, progress=False)
    scratch = parse_params({**TINY, "train": {"objectcxr": {**TINY["train"]["objectcxr"], "pretrained": False}}})
    made = train_model(project, scratch, "objectcxr", ARCH, seed=3, progress=False)
    assert _client().get_run(made["run_id"]).data.params["start"] == "scratch"


def test_a_damaged_start_pointer_is_one_error_naming_the_file(project: Path) -> None:
    folder = pretrain_dir(project, "resnet50")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "start.json").write_text("{not json")
    with pytest.raises(XiqaError, match=r"start\.json: not valid JSON"):
        resolve_start(project, "resnet50")
