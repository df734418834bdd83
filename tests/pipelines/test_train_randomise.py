"""The `train` and `randomise` stages through `dvc repro`, in a throw-away git + DVC project with
a fresh embedded store: one dataset × one arch × two seeds (trained, SR, FR).

One test on purpose: every `dvc repro` costs several Python start-ups. It checks, in order,
1. SIGTERM in the middle of an epoch of the stage command leaves a KILLED run, no registered
   version and no pointer;
2. `dvc repro` then runs every cell cleanly: one registered version per grid cell, tagged and
   aliased, `best` on the highest val AUC, SR skipped with its reason (no ImageNet weights here),
   data md5 = the one in dvc.lock, commit = HEAD;
3. `models:/...@trained-s1` loads with working forward hooks and reproduces the run's logged
   test accuracy and AUC; FR models differ between seeds and equal an in-process FR init;
4. a second `dvc repro` runs nothing and creates no run;
5. forcing one training again (same seed) registers bit-identical weights;
6. `xiqa models list` / `xiqa models pull` against that store.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

try:
    from tests.conftest import BIN, project_env, run
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, project_env, run

pytestmark = pytest.mark.slow

ARCH = "resnet34"
NAME = f"xiqa-objectcxr-{ARCH}"
TINY = {
    "data": {"objectcxr": {"n_images": 24, "min_size": 64, "max_size": 72}},
    "prepare": {"train": 0.5, "val": 0.25, "test": 0.25},
    "grid": {"models": [{"dataset": "objectcxr", "arch": ARCH}], "seeds": [1, 2]},
    "train": {"objectcxr": {"image_size": 32, "epochs": 2, "batch_size": 4, "lr": 0.01,
                            "step_size": 1, "pretrained": False}},
    "pretrain": {"route": "none"},  # no start at all: SR is skipped, its reason said (the stand-in: test_pretrain.py)
}


def _repro(root: Path) -> str:
    return run(root, str(BIN / "dvc"), "repro", "train", "randomise").stdout


def _client(root: Path):
    import mlflow

    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(uri)


def _runs(root: Path) -> list:
    client = _client(root)
    return client.search_runs([client.get_experiment_by_name("xiqa-objectcxr").experiment_id])


def _pointer(root: Path, cond: str, seed: int) -> dict:
    return json.loads((root / "models" / f"objectcxr-{ARCH}" / cond / f"s{seed}.json").read_text())


def _sigterm_mid_epoch(root: Path, seed: int) -> subprocess.Popen:
    """Start the stage command with long training, SIGTERM it once epoch 1 is logged."""
    params = root / "params.yaml"
    original = params.read_text()
    longer = yaml.safe_load(original)
    longer["train"]["objectcxr"]["epochs"] = 500
    params.write_text(yaml.safe_dump(longer, sort_keys=False))
    proc = subprocess.Popen(["python", "-m", "pipelines.train", "--dataset", "objectcxr", "--arch",
                             ARCH, "--seed", str(seed)], cwd=root, env=project_env(root),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        query = ("SELECT COUNT(*) FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid "
                 "WHERE r.status = 'RUNNING' AND m.key = 'train_loss'")
        while time.monotonic() < deadline and proc.poll() is None:
            with sqlite3.connect(root / "mlflow.db", timeout=30) as con:
                if con.execute(query).fetchone()[0]:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        params.write_text(original)
    return proc


def test_train_and_randomise_stages_register_one_version_per_cell(
        make_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(TINY)
    run(root, str(BIN / "dvc"), "repro", "prepare@objectcxr")
    client = _client(root)

    # 1. SIGTERM in the middle of an epoch: a KILLED run, nothing registered, no pointer
    pointer = root / "models" / f"objectcxr-{ARCH}" / "trained" / "s1.json"
    proc = _sigterm_mid_epoch(root, seed=1)
    assert proc.returncode != 0
    assert [r.info.status for r in _runs(root)] == ["KILLED"]
    assert client.search_registered_models() == [] and not pointer.exists()

    # 2. dvc repro (re)runs every cell cleanly: versions, tags, aliases, skipped SR
    out = _repro(root)
    head = run(root, "git", "rev-parse", "HEAD").stdout.strip()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    dvc_md5 = next(o["md5"] for o in lock["stages"]["prepare@objectcxr"]["outs"]
                   if o["path"] == "data/prepared/objectcxr")
    versions = client.search_model_versions(f"name='{NAME}'")
    assert sorted((v.tags["condition"], v.tags["seed"]) for v in versions) == \
        [("fr", "1"), ("fr", "2"), ("trained", "1"), ("trained", "2")]
    for v in versions:
        assert v.tags["data_md5"] == dvc_md5 and v.tags["git_commit"] == head, v.tags
    aliases = {a: str(v) for a, v in client.get_registered_model(NAME).aliases.items()}
    by_alias = {a: client.get_model_version(NAME, v) for a, v in aliases.items()}
    assert set(aliases) == {"trained-s1", "trained-s2", "fr-s1", "fr-s2", "best"}
    for alias, mv in by_alias.items():
        if alias != "best":
            assert alias == f"{mv.tags['condition']}-s{mv.tags['seed']}"
    trained = [by_alias["trained-s1"], by_alias["trained-s2"]]
    best = max(trained, key=lambda mv: (float(mv.tags["val_auc"]), -int(mv.tags["seed"])))
    assert aliases["best"] == str(best.version)
    for seed in (1, 2):
        sr = _pointer(root, "sr", seed)
        assert sr["status"] == "skipped" and "XIQA_IMAGENET_WEIGHTS" in sr["reason"]
        ptr = _pointer(root, "trained", seed)
        assert ptr["model_uri"] == f"models:/{NAME}/{ptr['version']}" and ptr["run_id"]
    statuses = sorted(r.info.status for r in _runs(root))
    assert statuses == ["FINISHED"] * 4 + ["KILLED"]
    first = client.get_run(_pointer(root, "trained", 1)["run_id"])
    assert first.data.params["lr"] == "0.01" and first.data.params["epochs"] == "2"
    assert [m.step for m in client.get_metric_history(first.info.run_id, "val_auc")] == [1, 2]
    assert first.inputs.dataset_inputs[0].dataset.digest == dvc_md5
    assert "skipped: no ImageNet weights" in out

    # 3. load by alias: hooks fire, the run's logged test metrics are reproduced; FR seeds differ
    from xiqa.data.dataset import load_split
    from xiqa.models import build
    from xiqa.models.init import fully_randomise
    from xiqa.tracking.lookup import load_model
    from xiqa.training.loop import score

    model = load_model(f"models:/{NAME}@trained-s1")
    fired = []
    model.layer4.register_forward_hook(lambda m, i, o: fired.append(tuple(o.shape)))
    scores = score(model, load_split(root, "objectcxr", "test", 32), 4)
    assert fired and fired[0][1:] == (512, 1, 1)
    assert scores.accuracy == pytest.approx(first.data.metrics["test_accuracy"])
    assert scores.auc == pytest.approx(first.data.metrics["test_auc"], nan_ok=True)
    fr1, fr2 = load_model(f"models:/{NAME}@fr-s1"), load_model(f"models:/{NAME}@fr-s2")
    assert not torch.equal(fr1.conv1.weight, fr2.conv1.weight)
    expected = fully_randomise(build(ARCH), seed=1).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in fr1.state_dict().items())

    # 4. nothing to do the second time
    again = _repro(root)
    assert "Running stage" not in again, again
    assert len(_runs(root)) == 5

    # 5. seed 2 alone (the stage command itself, `--seed 2`): a new version with weights
    # bit-identical to those of seed 2 trained after seed 1 in the stage's one process (each seed
    # is seeded at its start, so the seeds before it change nothing); trained-s2 moves to it
    run(root, "python", "-m", "pipelines.train", "--dataset", "objectcxr", "--arch", ARCH, "--seed", "2")
    new = client.get_model_version_by_alias(NAME, "trained-s2")
    assert new.version != by_alias["trained-s2"].version
    a = load_model(f"models:/{NAME}/{new.version}").state_dict()
    b = load_model(f"models:/{NAME}/{by_alias['trained-s2'].version}").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # 6. the audit commands (in process, through the CLI app)
    from typer.testing import CliRunner

    from xiqa.cli import app

    monkeypatch.chdir(root)
    listed = CliRunner().invoke(app, ["models", "list", "--json"])
    rows = json.loads(listed.output)
    assert len(rows) == 5 and {r["name"] for r in rows} == {NAME}
    pulled = CliRunner().invoke(app, ["models", "pull", f"{NAME}@best", "--out", str(tmp_path / "pulled")])
    assert pulled.exit_code == 0, pulled.output
    card = json.loads((tmp_path / "pulled" / "model_card.json").read_text())
    assert card["data_md5"] == dvc_md5 and card["git_commit"] == head
    state = torch.load(tmp_path / "pulled" / "weights.pt", weights_only=True)
    assert set(state) == set(a)
