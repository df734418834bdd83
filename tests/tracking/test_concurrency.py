"""Several processes writing to one store at once (issue 6, part 2): no run, metric, model
version or alias is lost and version numbers stay unique. Here the embedded sqlite store; the
same workload against the PostgreSQL tracking server is in test_server.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WRITER = r"""
import sys
from pathlib import Path

import mlflow
import torch

from xiqa.tracking import registry, runs, store

root, worker, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
store.ensure_store(root)
torch.manual_seed(worker)
for i in range(n):
    seed = 100 * worker + i
    with runs.tracked_run(root, "objectcxr", f"w{worker}-{i}", {"worker": worker}, {"seed": str(seed)}):
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"val_auc": seed / 1000.0})
        registry.register(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1),
                                              torch.nn.Flatten()),
                          dataset="objectcxr", arch="resnet34", library="torchvision", condition="fr", seed=seed,
                          image_size=8, data_md5="0" * 32, git_commit="test")
"""


def run_writers(root: Path, workers: int, per_worker: int, env: dict[str, str] | None = None) -> None:
    """``workers`` processes at once, each logging ``per_worker`` runs (a 5-step metric history,
    a final metric) and registering one version of ``xiqa-objectcxr-resnet34`` per run, aliased
    ``fr-s<seed>``."""
    script = root.parent / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(w), str(per_worker)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                              env={**os.environ, **(env or {})})
             for w in range(workers)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outputs)


def check_nothing_lost(uri: str, workers: int, per_worker: int) -> None:
    """Every run FINISHED with its full metric history, versions 1..N, every alias on its seed."""
    import mlflow

    # registry_uri too: otherwise MLflow takes the process-wide one an earlier test may have set
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name("xiqa-objectcxr")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == workers * per_worker
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        assert len(client.get_metric_history(r.info.run_id, "loss")) == 5
        assert r.data.metrics["val_auc"] == int(r.data.tags["seed"]) / 1000.0
    versions = client.search_model_versions("name = 'xiqa-objectcxr-resnet34'", max_results=1000)
    numbers = sorted(int(v.version) for v in versions)
    assert numbers == list(range(1, workers * per_worker + 1))  # unique, none skipped
    aliases = client.get_registered_model("xiqa-objectcxr-resnet34").aliases
    expected = {f"fr-s{100 * w + i}" for w in range(workers) for i in range(per_worker)}
    assert set(aliases) == expected
    for alias, version in aliases.items():  # each alias points at the version of its own seed
        assert client.get_model_version("xiqa-objectcxr-resnet34", version).tags["seed"] == alias[4:]


def test_four_writers_lose_no_run_metric_version_or_alias(tmp_path: Path) -> None:
    from xiqa.tracking import store

    root = tmp_path / "project"
    store.ensure_store(root)  # the one-time initialisation, as `dvc repro` does before stages
    run_writers(root, workers=4, per_worker=3)
    check_nothing_lost(store.embedded_uri(root), workers=4, per_worker=3)
