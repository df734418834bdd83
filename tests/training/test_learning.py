"""Guards that the study's models learn (issue "models that learn"): a learning canary on tiny
phantoms with the demo's own fine-tuning recipe, the schedule, and a non-finite loss refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tiny_data import write_tiny_dataset
from xiqa.data.dataset import load_split
from xiqa.errors import XiqaError
from xiqa.models import build
from xiqa.params import Recipe, load_params, parse_params
from xiqa.training.loop import lr_schedule, seed_everything, train

REPO = Path(__file__).resolve().parents[2]


def test_learning_canary_the_demo_recipe_learns_a_tiny_task_below_ln2_and_to_val_auc_0_9(tmp_path: Path) -> None:
    """The demo's Object-CXR recipe (params.yaml: optimiser, learning rate, schedule, warm-up,
    batch, BatchNorm re-estimation), shrunk to 32 px and a fixed 8 epochs, from scratch on a task a
    working recipe cannot miss: a bright square on noise. A recipe that diverges (as the demo's
    once did: epoch losses of 2.4 to 5.7) or never moves fails here, in seconds."""
    root = write_tiny_dataset(tmp_path / "proj", n=64, splits=(40, 12, 12),
                              cache_sizes=(32,))
    demo = load_params(REPO / "params.yaml").train.objectcxr
    recipe = demo.model_copy(update={"image_size": 32, "epochs": 8, "pretrained": False, "augment": False,
                                     "precision": "fp32", "bn_recalibration": min(demo.bn_recalibration, 40)})
    tr, va = (load_split(root, "objectcxr", s, 32) for s in ("train", "val"))
    seed_everything(1)
    model = build("resnet34")
    result = train(model, tr, va, recipe, seed=1, progress=False)
    final = result.history[-1]
    assert final.train_loss < math.log(2), [h.train_loss for h in result.history]
    assert max(h.val_auc for h in result.history) >= 0.9, [h.val_auc for h in result.history]


def test_a_non_finite_loss_stops_training_with_one_error_at_that_step(tiny_root: Path) -> None:
    recipe = Recipe(image_size=32, epochs=2, batch_size=4, lr=1e12, momentum=0.9, pretrained=False,
                    augment=False, step_size=None)
    tr, va = (load_split(tiny_root, "objectcxr", s, 32) for s in ("train", "val"))
    seed_everything(1)
    with pytest.raises(XiqaError, match=r"training diverged at epoch 1, step \d+ \(train loss (nan|inf)\); "
                                        r"lower the learning rate \(train\.objectcxr\.lr, now 1e\+12\)"):
        train(build("resnet34"), tr, va, recipe, seed=1, progress=False)


def test_a_diverging_training_run_keeps_no_model_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from xiqa.tracking.store import ensure_store
    from xiqa.training.runs import train_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    root = write_tiny_dataset(tmp_path / "proj")
    ensure_store(root)
    params = parse_params({"train": {"objectcxr": {"image_size": 32, "epochs": 1, "batch_size": 4, "lr": 1e12,
                                                   "pretrained": False, "augment": False}}})
    with pytest.raises(XiqaError, match="training diverged"):
        train_model(root, params, "objectcxr", "resnet34", seed=1, progress=False)
    client = mlflow.MlflowClient()
    assert client.search_model_versions("name='xiqa-objectcxr-resnet34'") == []
    runs = client.search_runs([client.get_experiment_by_name("xiqa-objectcxr").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not (root / "models").exists()


@pytest.mark.parametrize(("schedule", "step_size", "expected"), [
    # 4 steps per epoch, 3 epochs, warm-up of 1 epoch from lr / 10
    ("cosine", None, [0.1, 0.325, 0.55, 0.775] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]),
    ("step", 1, [0.1, 0.325, 0.55, 0.775, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01]),
    ("step", None, [0.1, 0.325, 0.55, 0.775] + [1.0] * 8),
])
def test_the_learning_rate_per_step_warms_up_then_follows_the_schedule(schedule: str, step_size: int | None,
                                                                        expected: list[float]) -> None:
    recipe = Recipe(epochs=3, lr=1.0, schedule=schedule, step_size=step_size, gamma=0.1, warmup_epochs=1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    sched = lr_schedule(opt, recipe, steps_per_epoch=4)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(expected, rel=1e-12)
