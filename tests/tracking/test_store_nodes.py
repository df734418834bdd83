"""Runs left RUNNING on a Ray node that is gone (`xiqa grid run`): the retry of that cell, on
another machine where no pid can be checked, marks them KILLED and deletes their versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from xiqa.tracking.store import (
    HOST_TAG,
    NODE_ENV,
    NODE_TAG,
    NODES_GONE_ENV,
    PID_TAG,
    REAPED_TAG,
    ensure_store,
    experiment_id,
    experiment_run,
    owner_gone,
    process_tags,
)


def test_a_run_on_a_ray_node_that_is_gone_is_dead_even_on_another_host(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_000_000_000.0
    recent = int((now - 60) * 1000)
    elsewhere = process_tags() | {HOST_TAG: "another-machine", PID_TAG: "4242", NODE_TAG: "node-a"}
    monkeypatch.delenv(NODES_GONE_ENV, raising=False)
    assert not owner_gone(elsewhere, recent, now)  # another host, a minute ago: presumed alive
    monkeypatch.setenv(NODES_GONE_ENV, "node-b")
    assert not owner_gone(elsewhere, recent, now)  # another node is gone, not this one
    monkeypatch.setenv(NODES_GONE_ENV, "node-b,node-a")
    assert owner_gone(elsewhere, recent, now)
    assert not owner_gone(elsewhere | {NODE_TAG: ""}, recent, now)


def test_the_retry_of_a_cell_reaps_the_run_of_its_lost_node(root: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    import torch

    from xiqa.tracking.registry import register

    monkeypatch.setenv(NODE_ENV, "node-a")
    exp = experiment_id(root, "xiqa-lvot")
    client = mlflow.MlflowClient(ensure_store(root))
    lost = client.create_run(exp, run_name="trained-resnet50-s1",
                             tags=process_tags() | {HOST_TAG: "lost-machine", PID_TAG: "4242"})
    assert lost.data.tags[NODE_TAG] == "node-a"  # a grid task names its node
    with mlflow.start_run(run_id=lost.info.run_id):  # the attempt got as far as registering
        register(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)), dataset="lvot",
                 arch="resnet50", condition="trained", seed=1, image_size=2, data_md5="m", git_commit="c")
    client.update_run(lost.info.run_id, status="RUNNING")  # `with` ended it; a lost machine would not
    assert len(client.search_model_versions("name = 'xiqa-lvot-resnet50'")) == 1

    monkeypatch.setenv(NODE_ENV, "node-b")  # the retry, on another node
    monkeypatch.setenv(NODES_GONE_ENV, "node-a")
    with experiment_run(exp, "trained-resnet50-s1", {}) as retry:
        pass
    dead = client.get_run(lost.info.run_id)
    assert dead.info.status == "KILLED" and "(Ray node node-a)" in dead.data.tags[REAPED_TAG]
    assert client.search_model_versions("name = 'xiqa-lvot-resnet50'") == []
    assert client.get_run(retry.info.run_id).data.tags[NODE_TAG] == "node-b"
