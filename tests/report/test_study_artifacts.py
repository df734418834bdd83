"""The report stage reads each evaluation run's artifacts and says which thing failed: the run
lacks the artifact, or the store could not be read (a real sqlite store and artifact folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from xiqa.errors import XiqaError
from xiqa.report.gather import EvaluationArtifacts


@pytest.fixture
def logged(tmp_path):
    """``(client, run id)``: an evaluation-like run holding only ``per_image.csv``."""
    import mlflow

    from xiqa.tracking import store

    (tmp_path / "params.yaml").write_text("{}\n")
    store.ensure_store(tmp_path)
    exp = store.experiment_id(tmp_path, "xiqa-objectcxr")
    frame = pd.DataFrame({"image_id": ["a.png", "b.png"], "method": ["gradcam"] * 2, "hit": [1, 0]})
    csv = tmp_path / "per_image.csv"
    frame.to_csv(csv, index=False)
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifact(str(csv))
    return mlflow.MlflowClient(), run.info.run_id, frame


def _artifacts(client, run_id, tmp_path):
    dst = tmp_path / "dst"
    dst.mkdir(exist_ok=True)
    return EvaluationArtifacts(client, {"run_id": run_id, "model_run_id": run_id}, Path("eval/x.json"), dst)


def test_an_artifact_the_run_has_is_read_back(logged, tmp_path):
    client, run_id, frame = logged
    pd.testing.assert_frame_equal(_artifacts(client, run_id, tmp_path).csv("per_image.csv"), frame)


def test_an_artifact_the_run_lacks_is_named_as_missing(logged, tmp_path):
    client, run_id, _ = logged
    artifacts = _artifacts(client, run_id, tmp_path)
    with pytest.raises(XiqaError, match=rf"eval/x\.json: run {run_id} has no baselines\.csv artifact: rerun"):
        artifacts.csv("baselines.csv")
    assert artifacts.path("figure_maps.npz", required=False) is None


def test_a_run_the_store_does_not_know_is_a_read_failure_not_a_missing_file(logged, tmp_path):
    client, _, _ = logged
    with pytest.raises(XiqaError, match=r"cannot list the artifacts of run 0+ \(MlflowException: ") as err:
        _artifacts(client, "0" * 32, tmp_path)
    assert "has no" not in str(err.value)


def test_a_download_that_fails_says_so_and_names_the_run(logged, tmp_path):
    client, run_id, _ = logged
    artifacts = _artifacts(client, run_id, tmp_path)  # listed while the file was there
    uri = client.get_run(run_id).info.artifact_uri
    shutil.rmtree(uri.removeprefix("file://"))  # then the store loses it (a disk or server failure)
    with pytest.raises(XiqaError, match=rf"cannot download per_image\.csv of run {run_id} \((MlflowException|OSError|\w+Error): "):
        artifacts.csv("per_image.csv")
