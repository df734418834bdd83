"""Backup and restore of the team server (SPEC 8.1): ``deploy/tracking-server.sh backup`` takes
pg_dump of both databases and then the artifacts from a running server A; ``restore`` makes a
fresh folder of it, started as server B on other ports. ``xiqa report`` against B writes the
same tables byte for byte, and ``xiqa models pull`` the same weights (same SHA-256)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

try:
    from tests.conftest import BIN, SERVER_SCRIPT, Server, tracking_server
    from tests.report.test_report_cli import _log_study
    from tests.tracking.test_damaged_artifacts import _tiny_resnet
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, SERVER_SCRIPT, Server, tracking_server
    from test_damaged_artifacts import _tiny_resnet
    from test_report_cli import _log_study

NAME = "xiqa-objectcxr-resnet34"


def _use(server: Server, monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    from xiqa.tracking import store

    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XIQA_PROJECT", str(project))
    store._REACHABLE.clear()


def _outputs(out: Path) -> dict[str, bytes]:
    """Every table file of ``xiqa report`` and the pulled weights of every version, by name."""
    cli = CliRunner()
    from xiqa.cli import app

    report = cli.invoke(app, ["report", "-f", "md,csv,latex", "--out", str(out / "report")])
    assert report.exit_code == 0, report.output
    found = {p.name: p.read_bytes() for p in (out / "report").iterdir() if p.is_file()}
    for ref in (f"{NAME}@trained-s1", f"{NAME}@trained-s2", f"{NAME}@best"):
        pulled = cli.invoke(app, ["models", "pull", ref, "--out", str(out / ref)])
        assert pulled.exit_code == 0, pulled.output
        found[ref] = hashlib.sha256((out / ref / "weights.pt").read_bytes()).hexdigest().encode()
        card = json.loads((out / ref / "model_card.json").read_text())
        found[ref + " card"] = json.dumps({k: v for k, v in card.items() if k != "tracking_uri"},
                                          sort_keys=True).encode()
    return found


@pytest.mark.slow
def test_a_backup_of_a_running_server_restores_the_same_report_and_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from xiqa.tracking import runs, store
    from xiqa.tracking.registry import register

    project = tmp_path / "proj"
    project.mkdir()
    (project / "params.yaml").write_text("{}\n")
    backup = tmp_path / "backup"
    with tracking_server() as a:
        _use(a, monkeypatch, project)
        store.ensure_store(project)
        for seed in (1, 2):
            with runs.tracked_run(project, "objectcxr", f"trained-s{seed}", {"seed": seed}, {}):
                mlflow.log_metrics({"val_auc": 0.6 + seed / 10, "test_accuracy": 0.5 + seed / 20})
                register(_tiny_resnet(seed), dataset="objectcxr", arch="resnet34", library="torchvision",
                         condition="trained", seed=seed, image_size=16, data_md5="abc.dir",
                         git_commit="c0ffee", val_auc=0.6 + seed / 10)
        _log_study(project, "s1")
        before = _outputs(tmp_path / "a")
        # the backup needs no login and no secret: only the server's folder
        no_secrets = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "XIQA_"))}
        no_secrets["PATH"] = f"{BIN}:{no_secrets['PATH']}"
        taken = subprocess.run(["bash", str(SERVER_SCRIPT), "backup", str(a.folder), str(backup)],
                               env=no_secrets, capture_output=True, text=True, timeout=300)
        assert taken.returncode == 0, taken.stderr
        assert taken.stdout.strip() == str(backup)
        assert sorted(p.name for p in backup.iterdir()) == ["artifacts", "mlflow.dump", "mlflow_auth.dump"]
        again = subprocess.run(["bash", str(SERVER_SCRIPT), "backup", str(a.folder), str(backup)],
                               env=no_secrets, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "already exists" in again.stderr  # never over an old backup
        a_url = a.url
    # A is stopped and its folder deleted: B is all there is
    with tracking_server(password=a.password, restore=backup) as b:
        assert b.url != a_url
        _use(b, monkeypatch, project)
        after = _outputs(tmp_path / "b")
    assert sorted(after) == sorted(before) and len(before) > 6
    assert [name for name in before if before[name] != after[name]] == []
