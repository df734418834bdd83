"""One tracked, registered model per call (what the stages do), in process on tiny data:
SR with a weights file the test creates, SR skipped without, failures that register nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tiny_data import write_tiny_dataset
from xiqa.errors import XiqaError
from xiqa.models import build
from xiqa.models.weights import IMAGENET_FILES, WEIGHTS_ENV, WeightsUnavailable
from xiqa.params import parse_params
from xiqa.paths import model_pointer
from xiqa.tracking.lookup import load_model
from xiqa.training.runs import randomise_model, train_model

ARCH = "resnet34"
NAME = f"xiqa-objectcxr-{ARCH}"
TINY = {"train": {"objectcxr": {"image_size": 32, "epochs": 2, "batch_size": 4, "pretrained": False}}}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny project and store for the module (a fresh store costs seconds of CPU)."""
    from xiqa.tracking.store import ensure_store

    root = write_tiny_dataset(tmp_path_factory.mktemp("runs") / "proj")
    ensure_store(root)
    return root


@pytest.fixture(autouse=True)
def _no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _versions() -> int:
    return len(_client().search_model_versions(f"name='{NAME}'"))


def _runs() -> list:
    client = _client()
    exp = client.get_experiment_by_name("xiqa-objectcxr")
    return client.search_runs([exp.experiment_id]) if exp else []


def test_sr_with_a_supplied_weights_file_registers_the_imagenet_backbone(project: Path,
                                                                         tmp_path: Path) -> None:
    torch.manual_seed(5)
    weights = tmp_path / IMAGENET_FILES[ARCH][0]
    torch.save(build(ARCH, num_classes=1000).state_dict(), weights)
    params = parse_params({**TINY, "randomise": {"imagenet_weights": str(weights)}})
    pointer = randomise_model(project, params, "objectcxr", ARCH, "sr", seed=1)
    assert pointer["status"] == "registered" and pointer["alias"] == "sr-s1"
    assert json.loads(model_pointer(project, "objectcxr", ARCH, "sr", 1).read_text()) == pointer
    model = load_model(f"models:/{NAME}@sr-s1")
    reference = torch.load(weights, weights_only=True)
    assert torch.equal(model.layer1[0].conv1.weight, reference["layer1.0.conv1.weight"])
    mv = _client().get_model_version(NAME, pointer["version"])
    assert mv.tags["condition"] == "sr" and mv.tags["seed"] == "1"
    assert mv.tags["data_md5"] == pointer["data_md5"].strip() and mv.tags["data_md5"].endswith(".dir")
    assert set(pointer["metrics"]) == {"val_accuracy", "val_auc", "test_accuracy", "test_auc"}


def test_sr_without_weights_writes_a_skipped_pointer_with_the_reason_and_logs_nothing(project: Path) -> None:
    before_versions, before_runs = _versions(), len(_runs())
    pointer = randomise_model(project, parse_params(TINY), "objectcxr", ARCH, "sr", seed=2)
    assert pointer["status"] == "skipped" and pointer["condition"] == "sr" and pointer["seed"] == 2
    assert WEIGHTS_ENV in pointer["reason"] and "run_id" not in pointer
    assert json.loads(model_pointer(project, "objectcxr", ARCH, "sr", 2).read_text()) == pointer
    assert (_versions(), len(_runs())) == (before_versions, before_runs)


def test_pretrained_training_without_weights_fails_before_starting_a_run(project: Path) -> None:
    before = len(_runs())
    params = parse_params({"train": {"objectcxr": {**TINY["train"]["objectcxr"], "pretrained": True}}})
    with pytest.raises(WeightsUnavailable, match="pretrained: false"):
        train_model(project, params, "objectcxr", ARCH, seed=1, progress=False)
    assert len(_runs()) == before
    assert not model_pointer(project, "objectcxr", ARCH, "trained", 1).exists()


def test_an_exception_mid_epoch_fails_the_run_registers_nothing_and_writes_no_pointer(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    forward = torch.nn.CrossEntropyLoss.forward

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 1 has 2 batches: this is the middle of epoch 2
            raise RuntimeError("disk on fire")
        return forward(self, *args)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", flaky)
    before = _versions()
    with pytest.raises(RuntimeError, match="disk on fire"):
        train_model(project, parse_params(TINY), "objectcxr", ARCH, seed=3, progress=False)
    failed = [r for r in _runs() if r.data.tags.get("seed") == "3"]
    assert [r.info.status for r in failed] == ["FAILED"]
    assert "train_loss" in failed[0].data.metrics  # epoch 1 was logged
    assert _versions() == before
    assert not model_pointer(project, "objectcxr", ARCH, "trained", 3).exists()


def test_a_cuda_request_without_a_gpu_is_refused_before_any_run(project: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    before = len(_runs())
    with pytest.raises(XiqaError, match="no CUDA device"):
        randomise_model(project, parse_params(TINY), "objectcxr", ARCH, "fr", seed=1, device="cuda")
    assert len(_runs()) == before
