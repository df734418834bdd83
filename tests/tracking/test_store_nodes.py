"""Runs left RUNNING on a Ray node that is gone (`xiqa grid run`): the retry of that cell, on
another machine where no pid can be checked, marks them KILLED and deletes their versions; so it
does with the runs of an earlier attempt of its cell (same grid-cell token), on any node, and
with their FINISHED runs of a stage that never completed."""

from __future__ import annotations

from pathlib import Path

import pytest

from xiqa.tracking.owners import (
    COMPLETE_TAG,
    GRID_CELL_ENV,
    GRID_CELL_TAG,
    HOST_TAG,
    NODE_ENV,
    NODE_TAG,
    NODES_GONE_ENV,
    PID_TAG,
    REAPED_TAG,
    owner_gone,
    process_tags,
)
from xiqa.tracking.runs import experiment_run
from xiqa.tracking.store import ensure_store, experiment_id


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
                 arch="resnet50", library="torchvision", condition="trained", seed=1, image_size=2, data_md5="m", git_commit="c")
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


def test_a_run_of_an_earlier_attempt_of_this_grid_cell_is_dead_on_any_host(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_000_000_000.0
    recent = int((now - 60) * 1000)
    monkeypatch.delenv(NODES_GONE_ENV, raising=False)
    monkeypatch.setenv(GRID_CELL_ENV, "randomise@model0-fr:abc")
    me = process_tags()
    assert me[GRID_CELL_TAG] == "randomise@model0-fr:abc"
    earlier = me | {HOST_TAG: "another-machine", PID_TAG: "4242"}  # its node is still alive
    assert owner_gone(earlier, recent, now)
    assert not owner_gone(earlier | {GRID_CELL_TAG: "randomise@model0-fr:another-grid-run"}, recent, now)
    assert not owner_gone(me, recent, now)  # this very process: alive


def test_the_retry_of_a_randomise_cell_reaps_the_finished_seeds_of_its_earlier_attempt(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    import torch

    from xiqa.tracking.registry import register

    monkeypatch.delenv(NODES_GONE_ENV, raising=False)
    monkeypatch.setenv(GRID_CELL_ENV, "randomise@model0-fr:abc")
    exp = experiment_id(root, "xiqa-lvot")
    client = mlflow.MlflowClient(ensure_store(root))
    elsewhere = process_tags() | {HOST_TAG: "other-machine", PID_TAG: "4242"}

    def finished(name: str, tags: dict[str, str]) -> str:
        run = client.create_run(exp, run_name=name, tags=tags)
        with mlflow.start_run(run_id=run.info.run_id):  # FINISHED, with a registered version
            register(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)), dataset="lvot",
                     arch="resnet50", library="torchvision", condition="fr", seed=1, image_size=2, data_md5="m", git_commit="c")
        return run.info.run_id

    earlier = finished("fr-resnet50-s1", elsewhere | {COMPLETE_TAG: "false"})  # the attempt died later
    done = finished("fr-resnet50-s1", elsewhere | {COMPLETE_TAG: "true"})      # a completed stage
    untagged = finished("fr-resnet50-s1", elsewhere)                           # an older store's run
    with experiment_run(exp, "fr-resnet50-s1", {COMPLETE_TAG: "false"}):
        pass
    reaped = client.get_run(earlier)
    assert reaped.info.status == "KILLED" and REAPED_TAG in reaped.data.tags
    assert client.search_model_versions(f"run_id = '{earlier}'") == []
    for kept in (done, untagged):
        assert client.get_run(kept).info.status == "FINISHED"
        assert len(client.search_model_versions(f"run_id = '{kept}'")) == 1
