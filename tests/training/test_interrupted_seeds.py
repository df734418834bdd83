"""A `randomise` or `train` stage killed after it registered some of its seeds, then run again
(what a retried grid cell or the next `dvc repro` does): the real stage command in a subprocess, SIGKILL
(nobody ends anything), the rerun in this process, the project's real sqlite store.

Each seed must end with exactly one FINISHED run and one registered version, and every run of
the killed process KILLED with no version; a rerun of a stage that did complete still registers
new versions."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

try:
    from tests.conftest import project_env
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import project_env

from xiqa.params import load_params
from xiqa.paths import model_pointer
from xiqa.tracking.owners import COMPLETE_TAG, PID_TAG, REAPED_TAG
from xiqa.tracking.store import ensure_store

ARCH = "efficientnet_b0"
NAME = f"xiqa-objectcxr-{ARCH}"
SEEDS = (1, 2, 3)
TINY = {"train": {"objectcxr": {"image_size": 32, "batch_size": 4, "pretrained": False, "epochs": 1,
                            "augment": False}}}
STAGES = {"randomise": ("fr", ["--condition", "fr"]), "train": ("trained", [])}  # condition, options


def _stage(root: Path, stage: str) -> subprocess.Popen:
    seeds = [arg for s in SEEDS for arg in ("--seed", str(s))]
    return subprocess.Popen([sys.executable, "-m", f"pipelines.{stage}", "--dataset", "objectcxr",
                             "--arch", ARCH, *STAGES[stage][1], *seeds],
                            cwd=root, env=project_env(root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _runs(client) -> list:
    exp = client.get_experiment_by_name("xiqa-objectcxr")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def _rerun(root: Path, stage: str, seeds) -> list[dict]:
    """What the stage command calls, here in this process (a second start of torch and MLflow
    would double the test's time)."""
    from xiqa.training.runs import randomise_models, train_models

    params = load_params(root / "params.yaml")
    if stage == "train":
        return train_models(root, params, "objectcxr", ARCH, seeds, progress=False)
    return randomise_models(root, params, "objectcxr", ARCH, "fr", seeds)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_killed_after_a_seed_and_run_again_registers_each_seed_once(
        tiny_root: Path, stage: str) -> None:
    import mlflow

    condition = STAGES[stage][0]
    root = tiny_root
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    client = mlflow.MlflowClient(ensure_store(root))

    # 1. SIGKILL once the first seed's run has FINISHED (its version registered, its pointer
    #    written), while the later seeds are still to come
    proc = _stage(root, stage)
    deadline = time.monotonic() + 120
    while not any(r.info.status == "FINISHED" for r in _runs(client)):
        if proc.poll() is not None:
            raise AssertionError(f"the stage ended before a seed finished: {proc.communicate()}")
        assert time.monotonic() < deadline, "no seed finished within 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed = _runs(client)
    done = [r for r in killed if r.info.status == "FINISHED"]
    assert len(done) < len(SEEDS), "the stage finished every seed before it was killed"
    assert done and all(r.data.tags[COMPLETE_TAG] == "false" for r in done)
    assert {v.run_id for v in client.search_model_versions(f"name = '{NAME}'")} >= {r.info.run_id for r in done}
    killed_pid = killed[0].data.tags[PID_TAG]
    assert {r.data.tags[PID_TAG] for r in killed} == {killed_pid}

    # 2. the stage again, from the start: one FINISHED run and one version per seed
    pointers = _rerun(root, stage, SEEDS)
    assert [p["seed"] for p in pointers] == list(SEEDS)
    runs = _runs(client)
    versions = client.search_model_versions(f"name = '{NAME}'")
    for seed in SEEDS:
        finished = [r for r in runs if r.data.tags["seed"] == str(seed) and r.info.status == "FINISHED"]
        assert len(finished) == 1, (seed, [r.info.status for r in runs if r.data.tags["seed"] == str(seed)])
        assert finished[0].data.tags[PID_TAG] != killed_pid
        assert finished[0].data.tags[COMPLETE_TAG] == "true"
        mine = [v for v in versions if v.tags["seed"] == str(seed)]
        assert [v.run_id for v in mine] == [finished[0].info.run_id], seed
        pointer = json.loads(model_pointer(root, "objectcxr", ARCH, condition, seed).read_text())
        assert (pointer["run_id"], pointer["version"]) == (finished[0].info.run_id, str(mine[0].version))
        alias = client.get_model_version_by_alias(NAME, f"{condition}-s{seed}")
        assert str(alias.version) == str(mine[0].version)
    # every run of the killed process, finished or not, is KILLED, reaped, and keeps no version
    for old in killed:
        now = client.get_run(old.info.run_id)
        assert now.info.status == "KILLED" and REAPED_TAG in now.data.tags, (old.info.status, now.data.tags)
        assert client.search_model_versions(f"run_id = '{old.info.run_id}'") == []
    assert len(versions) == len(SEEDS)

    # 3. a rerun of the completed stage (a params change, --force) registers a new version and
    #    leaves the completed one alone
    before = client.get_model_version_by_alias(NAME, f"{condition}-s1")
    again = _rerun(root, stage, [1])[0]
    assert again["version"] != str(before.version)
    assert client.get_run(before.run_id).info.status == "FINISHED"
    assert len(client.search_model_versions(f"name = '{NAME}'")) == len(SEEDS) + 1
