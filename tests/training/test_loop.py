"""The training loop: seeded, keeps the best validation epoch, reports each epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xiqa.data.dataset import load_split
from xiqa.errors import XiqaError
from xiqa.models import build
from xiqa.params import Recipe
from xiqa.training.loop import EpochLog, score, seed_everything, train
from xiqa.training.metrics import classification_accuracy, roc_auc

RECIPE = Recipe(image_size=32, epochs=3, batch_size=4, lr=0.01, step_size=2, pretrained=False)


def _train(root: Path, seed: int, recipe: Recipe = RECIPE, **kw):
    tr = load_split(root, "objectcxr", "train", recipe.image_size)
    va = load_split(root, "objectcxr", "val", recipe.image_size)
    seed_everything(seed)
    model = build("resnet34")
    result = train(model, tr, va, recipe, seed=seed, progress=False, **kw)
    return model, result, va


def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not(tiny_root: Path) -> None:
    a, _, _ = _train(tiny_root, seed=1)
    b, _, _ = _train(tiny_root, seed=1)
    c, _, _ = _train(tiny_root, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])


def test_keeps_the_epoch_with_best_validation_accuracy_and_reports_every_epoch(tiny_root: Path) -> None:
    logs: list[EpochLog] = []
    model, result, val = _train(tiny_root, seed=3, on_epoch=logs.append)
    assert [log.epoch for log in logs] == [1, 2, 3] and result.history == logs
    best = max(logs, key=lambda log: (log.val_accuracy, log.val_auc))
    assert result.best_epoch == min(log.epoch for log in logs
                                    if (log.val_accuracy, log.val_auc) == (best.val_accuracy, best.val_auc))
    again = score(model, val, 4)  # the model holds the kept epoch's weights
    assert again.accuracy == pytest.approx(result.val_accuracy)
    assert not model.training
    assert [log.lr for log in logs] == pytest.approx([0.01, 0.01, 0.001])  # step schedule
    assert all(np.isfinite(log.train_loss) and log.images_per_second > 0 for log in logs)
    assert set(logs[0].metrics()) == {"train_loss", "val_accuracy", "val_auc", "lr",
                                      "epoch_seconds", "images_per_second"}


def test_asking_for_cuda_without_a_gpu_is_a_user_error(tiny_root: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(XiqaError, match="no CUDA device"):
        _train(tiny_root, seed=1, device="cuda")


def test_a_diverging_loss_names_the_learning_rate(tiny_root: Path) -> None:
    with pytest.raises(XiqaError, match="lower the learning rate"):
        _train(tiny_root, seed=1, recipe=RECIPE.model_copy(update={"lr": 1e12, "epochs": 1}))


def test_fp16_on_a_cpu_is_a_user_error_naming_the_key(tiny_root: Path) -> None:
    with pytest.raises(XiqaError, match=r"precision: fp16 needs a CUDA device"):
        _train(tiny_root, seed=1, recipe=RECIPE.model_copy(update={"precision": "fp16", "epochs": 1}))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_mixed_precision_and_channels_last_leave_a_float32_standard_layout_model(tiny_root: Path,
                                                                                device: str) -> None:
    one = RECIPE.model_copy(update={"epochs": 1})
    plain, base, _ = _train(tiny_root, seed=1, recipe=one, device=device)
    precisions = ["bf16", "fp16"] if device == "cuda" else ["bf16"]
    for precision in precisions:
        model, result, _ = _train(tiny_root, seed=1, device=device, recipe=one.model_copy(
            update={"precision": precision, "channels_last": True}))
        weights = model.state_dict()
        assert all(v.dtype == plain.state_dict()[k].dtype for k, v in weights.items())
        assert weights["conv1.weight"].is_contiguous()  # back in the layout saliency expects
        assert np.isfinite(result.history[0].train_loss)
        # the autocast really ran in reduced precision: the loss moved off the fp32 one
        assert result.history[0].train_loss != base.history[0].train_loss


def test_roc_auc_equals_the_mann_whitney_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * labels, 1)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    slow = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(labels, scores) == pytest.approx(slow, abs=1e-12)
    assert np.isnan(roc_auc(np.ones(4), np.arange(4)))
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert classification_accuracy([0, 1, 1], [0, 1, 0]) == pytest.approx(2 / 3)


def test_bn_recalibration_sets_running_statistics_to_those_of_the_first_training_images(tiny_root: Path) -> None:
    """With ``bn_recalibration: n`` the kept model's first BatchNorm holds the plain mean and
    unbiased variance of its input over the first n training images (one batch here), computed
    independently from the stem convolution's output."""
    n = 6
    recipe = RECIPE.model_copy(update={"epochs": 1, "batch_size": 8, "bn_recalibration": n})
    model, _, _ = _train(tiny_root, seed=1, recipe=recipe)
    tr = load_split(tiny_root, "objectcxr", "train", recipe.image_size)
    with torch.no_grad():
        stem = model.conv1(tr.inputs(slice(0, n))).double()  # [n, C, H, W]: what bn1 normalises
    per_channel = stem.transpose(0, 1).reshape(stem.shape[1], -1)
    torch.testing.assert_close(model.bn1.running_mean.double(), per_channel.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.bn1.running_var.double(), per_channel.var(1, unbiased=True), rtol=1e-4, atol=1e-5)
    assert not model.training
    plain, _, _ = _train(tiny_root, seed=1, recipe=recipe.model_copy(update={"bn_recalibration": 0}))
    assert not torch.allclose(plain.bn1.running_mean, model.bn1.running_mean)
