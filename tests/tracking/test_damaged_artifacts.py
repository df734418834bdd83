"""A damaged artifact (SPEC 8.1): every registered version carries the SHA-256 of its weights
file, and every consumer that loads one (``xiqa models pull``, ``xiqa explain``, the evaluate and
sanity stages) verifies it after the download, refusing a flipped byte in one sentence that names
the version and both hashes, before anything is computed from it. A damaged DVC-tracked file is
DVC's to catch: ``dvc status`` names it and ``dvc checkout`` restores it from the cache."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from xiqa.errors import XiqaError
from xiqa.tracking.lookup import load_model
from xiqa.tracking.registry import WEIGHTS_TAG, register
from xiqa.tracking.runs import tracked_run

NAME = "xiqa-objectcxr-resnet34"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny_resnet(seed: int) -> nn.Module:
    """Four channels, but the module names resnet34's presets read (``layer4.2``, ``fc``, ...)."""
    torch.manual_seed(seed)

    def conv() -> nn.Module:
        return nn.Conv2d(4, 4, 3, padding=1)

    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, padding=1), layer1=nn.Sequential(conv(), nn.ReLU()),
        layer2=nn.Sequential(conv(), nn.ReLU()), layer3=nn.Sequential(conv(), nn.ReLU()),
        layer4=nn.Sequential(conv(), nn.ReLU(), conv(), nn.ReLU()),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(4, 2)))


def _register(root: Path, seed: int, dataset: str = "objectcxr", image_size: int = 16):
    model = _tiny_resnet(seed)
    with tracked_run(root, dataset, f"trained-s{seed}", {"seed": seed}, {}):
        reg = register(model, dataset=dataset, arch="resnet34", library="torchvision", condition="trained",
                       seed=seed, image_size=image_size, data_md5="abc.dir", git_commit="deadbeef",
                       val_auc=0.5 + seed / 10)
    return model, reg


def _stored_weights(root: Path, version: str, name: str = NAME) -> Path:
    """The weights file of ``version`` as the embedded store keeps it under ``mlruns/``."""
    import mlflow

    source = mlflow.MlflowClient().get_model_version(name, version).source  # models:/m-<id>
    model_id = source.removeprefix("models:/")
    found = [p for p in (root / "mlruns").rglob("model.pth") if model_id in p.parts]
    assert len(found) == 1, found
    return found[0]


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _error_lines(output: str) -> list[str]:
    """The ``xiqa: error:`` lines of a command's output (MLflow's download bar aside)."""
    return [line for line in output.replace("\r", "\n").splitlines() if line.startswith("xiqa:")]


def _damaged_message(version: str, before: str, after: str) -> str:
    return (f"model version {NAME}/{version}: the downloaded weights have SHA-256 {after}, but {before} "
            "was recorded at registration")


def test_registration_tags_each_version_with_the_sha256_of_its_stored_weights_file(root: Path) -> None:
    import mlflow

    _register(root, 1)
    _register(root, 2)
    client = mlflow.MlflowClient()
    tags = [client.get_model_version(NAME, version).tags[WEIGHTS_TAG] for version in ("1", "2")]
    assert tags == [_sha256(_stored_weights(root, version)) for version in ("1", "2")]
    assert tags[0] != tags[1] and all(len(t) == 64 for t in tags)


def test_a_flipped_byte_is_refused_by_pull_explain_and_load_naming_the_version_and_both_hashes(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xiqa.cli import app
    from xiqa.evaluation.cell import load_pointer_model

    model, _ = _register(root, 1)
    _register(root, 2)
    stored = _stored_weights(root, "2")
    before = _sha256(stored)
    _flip_a_byte(stored)
    after = _sha256(stored)
    assert after != before
    expected = _damaged_message("2", before, after)

    monkeypatch.chdir(root)
    cli = CliRunner()
    pulled = cli.invoke(app, ["models", "pull", f"{NAME}@trained-s2", "--out", str(tmp_path / "pulled")])
    assert pulled.exit_code == 2
    [line] = _error_lines(pulled.output)
    assert line.startswith("xiqa: error: " + expected), pulled.output
    assert not (tmp_path / "pulled").exists()  # no weights.pt, no model card

    scan = tmp_path / "scan.npy"
    np.save(scan, np.random.default_rng(0).integers(0, 255, (20, 20), dtype=np.uint8))
    explained = cli.invoke(app, ["explain", str(scan), "--model", f"{NAME}/2", "--out", str(tmp_path / "o.png")])
    assert explained.exit_code == 2
    [line] = _error_lines(explained.output)
    assert line.startswith("xiqa: error: " + expected), explained.output
    assert "Pointing Game" not in explained.output and not (tmp_path / "o.png").exists()

    # what the evaluate and sanity stages call for each pointer
    with pytest.raises(XiqaError) as err:
        load_pointer_model({"model_uri": f"models:/{NAME}/2", "run_id": "r"}, "cpu")
    assert expected in str(err.value)

    # the undamaged version still loads, pulls and explains
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(load_model(f"models:/{NAME}@trained-s1")(x), model.eval()(x))
    ok = cli.invoke(app, ["models", "pull", f"{NAME}@trained-s1", "--out", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    card = json.loads((tmp_path / "ok" / "model_card.json").read_text())
    assert card["tags"][WEIGHTS_TAG] == _sha256(_stored_weights(root, "1"))
    explained = cli.invoke(app, ["explain", str(scan), "--model", f"{NAME}/1", "--out", str(tmp_path / "o.png")])
    assert explained.exit_code == 0, explained.output
    assert (tmp_path / "o.png").is_file()


def test_a_version_without_the_tag_loads_with_a_warning(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    import mlflow

    model, _ = _register(root, 1)
    mlflow.MlflowClient().delete_model_version_tag(NAME, "1", WEIGHTS_TAG)  # as registered before the tag
    with caplog.at_level("WARNING", logger="xiqa.tracking.lookup"):
        loaded = load_model(f"models:/{NAME}/1")
    assert f"{NAME}/1 has no {WEIGHTS_TAG} tag" in caplog.text
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


@pytest.mark.slow
def test_dvc_catches_damaged_prepared_data_and_the_stages_refuse_a_damaged_model(make_project) -> None:
    """Real DVC in a throw-away repository: a flipped byte in the prepared image cache shows in
    ``dvc status`` and ``dvc checkout`` restores it; then the evaluate and sanity stages, given a
    pointer to a version whose stored weights were damaged, exit 2 in one sentence, write no
    pointer, and their runs are FAILED with no metric logged."""
    import mlflow

    from xiqa import paths
    from xiqa.io import write_json

    try:
        from tests.conftest import BIN, run
    except ModuleNotFoundError:
        from conftest import BIN, run
    dvc = str(BIN / "dvc")
    root = make_project({"data": {"lvot": {"n_patients": 6, "slices_per_patient": 4, "size": 48}},
                         "sanity": {"samples": 2}})
    run(root, dvc, "repro", "prepare@lvot")
    cache = root / "data" / "prepared" / "lvot" / "images_112px.npy"
    good = _sha256(cache)
    _flip_a_byte(cache)
    status = run(root, dvc, "status", "prepare@lvot").stdout
    assert "modified:" in status and "data/prepared/lvot" in status, status
    run(root, dvc, "checkout", "--force", "prepare@lvot")
    assert _sha256(cache) == good
    assert "up to date" in run(root, dvc, "status", "prepare@lvot").stdout

    _, reg = _register(root, 1, dataset="lvot", image_size=112)
    write_json(paths.model_pointer(root, "lvot", "resnet34", "trained", 1), reg.pointer())
    stored = _stored_weights(root, reg.version, name=reg.name)
    before = _sha256(stored)
    _flip_a_byte(stored)
    after = _sha256(stored)
    for stage, only in (("evaluate", ["--condition", "trained"]), ("sanity", [])):
        proc = run(root, str(BIN / "python"), "-m", f"pipelines.{stage}", "--dataset", "lvot", "--arch",
                   "resnet34", "--seed", "1", *only, check=False)
        [line] = _error_lines(proc.stderr)
        assert proc.returncode == 2, proc.stderr
        assert line == (f"xiqa: error: model version {reg.name}/{reg.version}: the downloaded weights have "
                        f"SHA-256 {after}, but {before} was recorded at registration; the stored artifact is "
                        "damaged, so nothing was computed from it (restore the store from a backup, or "
                        "register the model again)")
    assert not (root / "eval").exists() and not (root / "sanity").exists()
    runs = mlflow.search_runs(experiment_names=["xiqa-lvot"], output_format="list")
    stage_runs = [r for r in runs if r.info.run_name.startswith(("evaluate ", "sanity "))]
    assert sorted(r.info.run_name for r in stage_runs) == ["evaluate lvot-resnet34 trained-s1",
                                                          "sanity lvot-resnet34 trained-s1"]
    assert [(r.info.status, r.data.metrics) for r in stage_runs] == [("FAILED", {})] * 2
