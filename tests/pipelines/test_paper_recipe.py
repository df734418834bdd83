"""Smoke run of the paper's recipe (``params-paper.yaml``) through `dvc repro`, on CPU.

The paper's recipe differs from the demo's in the paths the demo never takes: ImageNet starts
(``pretrained: true``), the SR condition (which needs ImageNet weights, so it is always skipped
without them), augmentation, 600 px inputs decoded from about 2,000 px chest films, 224 px MR.
This test runs every stage of ``params-paper.yaml`` in a throw-away git + DVC project with only
its size cut down: a few phantoms per dataset, one epoch, one seed, one architecture per dataset,
batch 2, one sanity image, a short bootstrap. Everything else (input sizes, learning-rate
schedule, augmentation, 80/10/10 split, the evaluation's defaults) is the paper's.

"ImageNet" is a stand-in the test saves itself: a seeded torchvision state dict of each
architecture (1000-way head included) under its official file name, found through
``randomise.imagenet_weights``. The test checks that

1. every stage of ``dvc.yaml`` ran, and the raw films are paper-size while the image cache is at
   the recipe's input size;
2. every model pointer, evaluation, sanity result, metric file, plot and report table (in every
   format) exists, SR included, and the tables hold SR numbers instead of a skip note;
3. the SR versions carry the stand-in's backbone tensor for tensor and a head drawn afresh from
   the seed (He normal, zero bias), not the stand-in's;
4. training started from the stand-in (``pretrained: true``, augmentation on): after one epoch
   every trained backbone weight is nearer the stand-in's than the architecture's own seeded
   initialisation (the start ``pretrained: false`` takes).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

try:
    from tests.conftest import BIN, run
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, run

from xiqa import schema as S
from xiqa.models.weights import IMAGENET_FILES
from xiqa.models.zoo import constructor, spec

pytestmark = pytest.mark.slow

SEED = 1
CELLS = (("objectcxr", "resnet34"), ("lvot", "efficientnet_b0"))  # fc and classifier.1 heads
# Only sizes change; params-paper.yaml's recipe otherwise. Object-CXR films keep the paper's
# 1,800-2,200 px sides (params-paper.yaml), LVOT slices its 256 px. 14 films are the fewest for
# which the 80/10/10 split gives the test split an image with boxes and one without (10 give it
# none with boxes); 10 patients x 2 slices give it a slice with a tract. One batch of training.
SMOKE = {
    "device": "cpu",
    "data": {"objectcxr": {"n_images": 14}, "lvot": {"n_patients": 10, "slices_per_patient": 2}},
    "grid": {"models": [{"dataset": d, "arch": a} for d, a in CELLS], "seeds": [SEED]},
    "train": {ds: {"epochs": 1, "batch_size": 2, "max_train_images": 2} for ds in ("objectcxr", "lvot")},
    "evaluate": {"batch_size": 2, "bootstrap": 10, "permutations": 10, "figure_samples": 1},
    "sanity": {"samples": 1},
}
FORMATS = {"md": ".md", "csv": ".csv", "latex": ".tex", "html": ".html"}


def _save_stand_in_imagenet(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """A seeded torchvision state dict per architecture of the grid, saved under its official
    ImageNet file name in ``folder``; returns them."""
    folder.mkdir()
    states = {}
    for i, (_, arch) in enumerate(CELLS):
        torch.manual_seed(1000 + i)
        states[arch] = constructor(arch)().state_dict()
        torch.save(states[arch], folder / IMAGENET_FILES[arch][0])
    return states


def _client(root: Path):
    import mlflow

    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(uri)


def _pointer(root: Path, *parts: str) -> dict:
    return json.loads(root.joinpath(*parts).read_text())


def test_paper_recipe_runs_every_stage_with_sr_on_paper_size_phantoms(make_project, tmp_path: Path) -> None:
    stand_in = _save_stand_in_imagenet(tmp_path / "imagenet")
    root = make_project({**SMOKE, "randomise": {"imagenet_weights": str(tmp_path / "imagenet")}},
                        base="params-paper.yaml")
    dvc = str(BIN / "dvc")
    out = run(root, dvc, "repro").stdout

    # 1. every stage ran; paper-size films in, the recipe's input size in the cache
    stages = set(run(root, dvc, "stage", "list", "--name-only").stdout.split())
    assert set(re.findall(r"Running stage '([^']+)'", out)) == stages
    assert {s.split("@")[0] for s in stages} == {"data", "prepare", "pretrain", "train", "randomise",
                                                 "evaluate", "sanity", "report"}
    films = pd.read_csv(root / "data" / "prepared" / "objectcxr" / "images.csv")
    assert films[["width", "height"]].to_numpy().min() >= 1800
    for ds, size in (("objectcxr", 600), ("lvot", 224)):
        cache = np.load(root / "data" / "prepared" / ds / f"images_{size}px.npy", mmap_mode="r")
        assert cache.dtype.name == "uint8" and cache.shape[1:] == (1, size, size)

    # 2. every artifact: models (SR not skipped), evaluations, sanity, metrics, plots, tables
    client = _client(root)
    for ds, arch in CELLS:
        cell = f"{ds}-{arch}"
        for cond in ("trained", "sr", "fr"):
            ptr = _pointer(root, "models", cell, cond, f"s{SEED}.json")
            assert ptr.get("status") != "skipped" and ptr["model_uri"].startswith("models:/"), ptr
            assert client.get_run(ptr["run_id"]).info.status == "FINISHED"
            assert (root / "eval" / cell / f"{cond}-s{SEED}.json").is_file()
        assert (root / "sanity" / cell / f"trained-s{SEED}.json").is_file()
    for name in ("pointing_game", "classification", "localisation", "sanity"):
        metrics = json.loads((root / "reports" / "metrics" / f"{name}.json").read_text())
        assert all(arch in metrics[ds] for ds, arch in CELLS), name
    assert json.loads((root / "reports" / "metrics" / "architectures.json").read_text()) == {}  # one arch: no DoM
    for ds, arch in CELLS:  # the DVC metrics' headline: every condition measured
        for key in ("pg_mean/gradcam", "test_auc_mean", "test_accuracy_mean"):
            headline = json.loads((root / "metrics" / f"{ds}-{arch}" / f"{key}.json").read_text())
            assert set(headline) == {"trained", "sr", "fr"}, (ds, arch, key)
    assert {p.name for p in (root / "plots").iterdir()} == {f"pg-{ds}.csv" for ds, _ in CELLS}
    reports = root / "reports"
    keys = ["table2", "table7"] + [f"table{n}-{ds}" for ds in ("objectcxr", "lvot")
                                   for n in ({"objectcxr": (4, 6, 8, 9), "lvot": (3, 5, 8, 9)}[ds])]
    for key in keys:
        for suffix in FORMATS.values():
            assert (reports / f"{key}{suffix}").is_file(), f"{key}{suffix}"
    assert "data:image/png;base64," in (reports / "index.html").read_text()
    methods = [S.method_label(m) for m in S.METHODS]
    for ds, arch in CELLS:  # SR measured, not skipped
        n = {"objectcxr": 4, "lvot": 3}[ds]
        table = pd.read_csv(reports / f"table{n}-{ds}.csv", index_col="label")
        assert f"{ds}/{arch}/sr/pg_note" not in table.columns
        means = table.loc[methods, [f"{ds}/{arch}/{c}/pg_mean" for c in ("sr", "fr", "trained")]].to_numpy()
        assert ((means >= 0) & (means <= 1)).all()  # NaN fails too

    # 3. SR = the stand-in's backbone, tensor for tensor, and a head drawn afresh from the seed
    from xiqa.tracking.lookup import load_model

    for ds, arch in CELLS:
        name = _pointer(root, "models", f"{ds}-{arch}", "sr", f"s{SEED}.json")["name"]
        sr = load_model(f"models:/{name}@sr-s{SEED}").state_dict()
        prefix = spec(arch).head + "."
        backbone = [k for k in stand_in[arch] if not k.startswith(prefix)]
        assert set(sr) == set(backbone) | {prefix + "weight", prefix + "bias"}
        for key in backbone:
            assert torch.equal(sr[key], stand_in[arch][key]), key
        weight = sr[prefix + "weight"]
        fan_in = weight.shape[1]
        he = torch.empty(2, fan_in).normal_(0, math.sqrt(2 / fan_in),
                                            generator=torch.Generator().manual_seed(SEED))
        assert torch.equal(weight, he) and torch.equal(sr[prefix + "bias"], torch.zeros(2))
        assert not torch.equal(weight, stand_in[arch][prefix + "weight"][:2])

    # 4. training started from the stand-in: nearer it than the seeded own initialisation
    for ds, arch in CELLS:
        ptr = _pointer(root, "models", f"{ds}-{arch}", "trained", f"s{SEED}.json")
        logged = client.get_run(ptr["run_id"]).data.params
        assert (logged["pretrained"], logged["augment"], logged["epochs"]) == ("True", "True", "1")
        assert logged["imagenet_weights"] == str(tmp_path / "imagenet")
        trained = load_model(f"models:/{ptr['name']}@trained-s{SEED}").state_dict()
        torch.manual_seed(SEED)
        own = constructor(arch)().state_dict()
        prefix = spec(arch).head + "."
        weights = [k for k, v in trained.items() if k.endswith("weight") and v.dim() > 1
                   and not k.startswith(prefix)]
        assert weights
        for key in weights:
            near = (trained[key] - stand_in[arch][key]).norm()
            assert near < (trained[key] - own[key]).norm(), key
        assert not all(torch.equal(trained[k], stand_in[arch][k]) for k in weights)  # it trained
