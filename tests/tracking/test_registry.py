"""The registry: versions, tags, aliases, `best`, hooks after loading, list and pull, data md5."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from xiqa.errors import XiqaError
from xiqa.tracking.lookup import list_models, load_model, parse_ref, pull
from xiqa.tracking.registry import data_md5, dvc_dir_md5, register
from xiqa.tracking.runs import tracked_run

NAME = "xiqa-objectcxr-resnet34"


def _tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def _register(root: Path, condition: str, seed: int, val_auc: float | None = None):
    model = _tiny_model(seed * 10 + len(condition))
    with tracked_run(root, "objectcxr", f"{condition}-s{seed}", {"seed": seed}, {}):
        import mlflow

        mlflow.log_metrics({"test_accuracy": 0.5 + seed / 10})
        reg = register(model, dataset="objectcxr", arch="resnet34", library="torchvision", condition=condition, seed=seed,
                       image_size=16, data_md5="abc.dir", git_commit="deadbeef", val_auc=val_auc)
    return model, reg


def test_each_registration_is_a_tagged_aliased_version_and_best_follows_val_auc(root: Path) -> None:
    import mlflow

    _register(root, "trained", 1, val_auc=0.7)
    _register(root, "trained", 2, val_auc=0.9)
    _register(root, "fr", 1)
    client = mlflow.MlflowClient()
    aliases = {a: str(v) for a, v in client.get_registered_model(NAME).aliases.items()}
    assert aliases == {"trained-s1": "1", "trained-s2": "2", "fr-s1": "3", "best": "2"}
    mv = client.get_model_version(NAME, "3")
    assert {k: mv.tags[k] for k in ("condition", "seed", "data_md5", "git_commit")} == \
        {"condition": "fr", "seed": "1", "data_md5": "abc.dir", "git_commit": "deadbeef"}
    # retraining seed 2 worse moves trained-s2 and best to the better remaining version
    _, reg = _register(root, "trained", 2, val_auc=0.5)
    assert reg.version == "4" and reg.model_uri == f"models:/{NAME}/4"
    aliases = {a: str(v) for a, v in client.get_registered_model(NAME).aliases.items()}
    assert aliases["trained-s2"] == "4" and aliases["best"] == "1"


def test_a_loaded_model_equals_the_registered_one_and_its_forward_hooks_fire(root: Path) -> None:
    model, _ = _register(root, "trained", 1, val_auc=0.8)
    loaded = load_model(f"models:/{NAME}@trained-s1")
    x = torch.randn(3, 3, 16, 16)
    fired = []
    handle = loaded[0].register_forward_hook(lambda m, i, o: fired.append(o.shape))
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    handle.remove()
    assert fired == [torch.Size([3, 4, 14, 14])]
    assert not loaded.training


def test_logged_model_has_a_signature_pickle_format_and_pinned_requirements(root: Path) -> None:
    import mlflow

    _, reg = _register(root, "fr", 2)
    info = mlflow.models.get_model_info(reg.model_uri)
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] in ([-1, 3, 16, 16], (-1, 3, 16, 16))
    assert info.flavors["pytorch"].get("serialization_format", "pickle") == "pickle"
    local = Path(mlflow.artifacts.download_artifacts(reg.model_uri))
    reqs = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in reqs) and any(r.startswith("torchvision==") for r in reqs)


def test_list_and_pull_give_weights_and_a_model_card(root: Path, tmp_path: Path) -> None:
    model, _ = _register(root, "trained", 3, val_auc=0.6)
    import mlflow

    client = mlflow.MlflowClient()
    rows = list_models(client)
    assert [(r["version"], r["aliases"], r["tags"]["condition"]) for r in rows] == \
        [("1", ["best", "trained-s3"], "trained")]
    assert rows[0]["metrics"]["test_accuracy"] == pytest.approx(0.8)
    weights, card = pull(client, f"{NAME}@best", tmp_path / "out")
    state = torch.load(weights, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    card = json.loads(card.read_text())
    assert card["data_md5"] == "abc.dir" and card["git_commit"] == "deadbeef"
    assert card["params"] == {"seed": "3"} and card["metrics"]["test_accuracy"] == pytest.approx(0.8)
    assert card["aliases"] == ["best", "trained-s3"] and card["version"] == "1"


def test_models_cli_lists_and_pulls_and_names_an_unknown_alias(root: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from xiqa.cli import app

    _register(root, "fr", 1)
    monkeypatch.chdir(root)
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert NAME in listed.output and "fr-s1" in listed.output
    rows = json.loads(runner.invoke(app, ["models", "list", "--json"]).output)
    assert rows[0]["tags"]["seed"] == "1"
    pulled = runner.invoke(app, ["models", "pull", f"{NAME}@fr-s1", "--out", str(tmp_path / "p")])
    assert pulled.exit_code == 0, pulled.output
    assert (tmp_path / "p" / "weights.pt").is_file() and (tmp_path / "p" / "model_card.json").is_file()
    missing = runner.invoke(app, ["models", "pull", f"{NAME}@trained-s9", "--out", str(tmp_path / "q")])
    assert missing.exit_code == 2 and "trained-s9" in missing.output and "not found" in missing.output


def test_model_references_are_name_at_alias_or_name_slash_version() -> None:
    assert parse_ref("xiqa-lvot-resnet50@fr-s2") == ("xiqa-lvot-resnet50", "fr-s2", None)
    assert parse_ref("models:/xiqa-lvot-resnet50/7") == ("xiqa-lvot-resnet50", None, "7")
    with pytest.raises(XiqaError, match="NAME@ALIAS"):
        parse_ref("xiqa-lvot-resnet50")


def test_register_needs_an_active_run() -> None:
    with pytest.raises(RuntimeError, match="active MLflow run"):
        register(_tiny_model(0), dataset="lvot", arch="resnet50", library="torchvision", condition="fr", seed=1,
                 image_size=16, data_md5="x", git_commit="y")


def test_data_md5_is_the_md5_dvc_records_for_the_prepared_folder(tmp_path: Path) -> None:
    prepared = tmp_path / "data" / "prepared" / "lvot"
    (prepared / "sub").mkdir(parents=True)
    (prepared / "splits.csv").write_text("image_id,split\na,train\n")
    (prepared / "boxes.csv").write_bytes(b"image_id,x0\r\nb,1\r\n")  # CRLF kept as is (DVC 3)
    (prepared / "sub" / "images.csv").write_text("image_id\n")
    code = ("import sys; from dvc_data.hashfile.build import build; "
            "from dvc_data.hashfile.db import HashFileDB; from dvc_objects.fs.local import LocalFileSystem; "
            "fs = LocalFileSystem(); odb = HashFileDB(fs, sys.argv[2]); "
            "print(build(odb, sys.argv[1], fs, 'md5')[2].hash_info.value)")
    dvc = subprocess.run([sys.executable, "-c", code, str(prepared), str(tmp_path / "odb")],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert dvc_dir_md5(prepared) == dvc == data_md5(tmp_path, "lvot")
    assert dvc.endswith(".dir")
