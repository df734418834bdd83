"""The model registry, reading side: look registered models up (``NAME@ALIAS`` / ``NAME/VERSION``),
load them, list them and pull them for an audit (SPEC 7); :mod:`xiqa.tracking.registry` registers.

:func:`load_model` and :func:`pull` download a version, hash its weights file again and refuse one
whose hash differs from the ``weights_sha256`` tag recorded at registration (a damaged artifact)
before unpickling it; a version registered before the tag existed loads with a one-line warning.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xiqa.errors import XiqaError
from xiqa.tracking.registry import WEIGHTS_FILE, WEIGHTS_TAG, file_digest

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlflow import MlflowClient
    from torch import nn

_REF = re.compile(r"^(?P<name>[^@/:]+)(?:@(?P<alias>[^@/]+)|/(?P<version>\d+))$")


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS`` or ``NAME/VERSION`` (a ``models:/`` prefix is allowed) → (name, alias, version)."""
    text = ref.removeprefix("models:/")
    m = _REF.match(text)
    if not m:
        raise XiqaError(f"model reference {ref!r} is not NAME@ALIAS or NAME/VERSION "
                        "(e.g. xiqa-objectcxr-resnet34@trained-s1)")
    return m["name"], m["alias"], m["version"]


def model_version(client: MlflowClient, ref: str):
    """The ``ModelVersion`` behind ``NAME@ALIAS`` / ``NAME/VERSION``; unknown ones are a
    :class:`XiqaError`."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_ref(ref)
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        if version is not None:
            return client.get_model_version(name, version)
    except MlflowException as err:
        from xiqa.tracking.store import refusal

        refused = refusal(err)
        if refused is not None:
            raise refused from None
        raise XiqaError(f"model {ref!r} not found in the registry at {client.tracking_uri} "
                        f"({err.error_code})") from None
    raise XiqaError(f"model reference {ref!r} names neither an alias nor a version")


def load_model(uri: str, device: str = "cpu") -> nn.Module:
    """A registered model (``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or a run's model
    URI) as a plain ``nn.Module`` in eval mode on ``device``, hooks working. A registry reference
    is downloaded and its weights checked against the version's ``weights_sha256`` tag first
    (:func:`verified_download`): a damaged artifact is a :class:`XiqaError`, never unpickled."""
    import tempfile

    import mlflow
    import mlflow.pytorch

    if not uri.startswith("models:/") or not _REF.match(uri.removeprefix("models:/")):
        return mlflow.pytorch.load_model(uri, map_location=device).to(device).eval()
    with tempfile.TemporaryDirectory(prefix="xiqa-model-") as tmp:
        local = verified_download(mlflow.MlflowClient(), uri, Path(tmp))
        return mlflow.pytorch.load_model(str(local), map_location=device).to(device).eval()


_DROPPED = re.compile(r"Connection (broken|aborted|reset)|IncompleteRead|RemoteDisconnected|ChunkedEncodingError")


def _download_riding_out_drops(download: Callable[[], Path], dst: Path) -> Path:
    """``download()`` into ``dst``, started again (what it left removed) while the server drops
    the connection mid-file, for up to ``$XIQA_TRACKING_RETRY_S`` seconds: MLflow's retries cover
    a request that gets no answer, not a body cut off half-way (``mlflow server`` restarted)."""
    import shutil
    import time

    from mlflow.exceptions import MlflowException

    from xiqa.tracking.store import retry_seconds

    deadline, before = time.monotonic() + retry_seconds(), set(dst.iterdir()) if dst.is_dir() else set()
    while True:
        try:
            return download()
        except MlflowException as err:
            if not _DROPPED.search(str(err)) or time.monotonic() >= deadline:
                raise
        for left in (set(dst.iterdir()) if dst.is_dir() else set()) - before:
            if left.is_dir():
                shutil.rmtree(left)
            else:
                left.unlink()
        time.sleep(1)


def verified_download(client: MlflowClient, ref: str, dst: Path) -> Path:
    """Download the model artifact of registry reference ``ref`` into folder ``dst`` and check
    its weights file against the version's ``weights_sha256`` tag. Returns the model folder.
    A hash that differs is a :class:`XiqaError` naming the version and both hashes."""
    import mlflow.artifacts

    mv = model_version(client, ref)
    label = f"{mv.name}/{mv.version}"
    local = _download_riding_out_drops(lambda: Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{label}", dst_path=str(dst), tracking_uri=client.tracking_uri)), dst)
    expected = (mv.tags or {}).get(WEIGHTS_TAG)
    weights = local / WEIGHTS_FILE
    if not weights.is_file():
        raise XiqaError(f"model version {label}: its artifact has no {WEIGHTS_FILE} "
                        "(not a model xiqa registered, or the file was deleted from the store)")
    actual = file_digest(weights, "sha256")
    if expected is None:
        logging.getLogger(__name__).warning(
            "model version %s has no %s tag (registered before xiqa recorded it): its weights "
            "(SHA-256 %s) are not verified", label, WEIGHTS_TAG, actual)
    elif actual != expected:
        raise XiqaError(f"model version {label}: the downloaded weights have SHA-256 {actual}, "
                        f"but {expected} was recorded at registration; the stored artifact is "
                        "damaged, so nothing was computed from it (restore the store from a "
                        "backup, or register the model again)")
    return local


def list_models(client: MlflowClient, prefix: str = "xiqa-") -> list[dict[str, Any]]:
    """Every version of every registered model whose name starts with ``prefix``: name, version,
    aliases, tags, run id and the run's final metrics; sorted by name, then version."""
    rows = []
    for rm in client.search_registered_models(max_results=1000):
        if not rm.name.startswith(prefix):
            continue
        by_version: dict[str, list[str]] = {}
        for a, v in (rm.aliases or {}).items():
            by_version.setdefault(str(v), []).append(a)
        for mv in client.search_model_versions(f"name='{rm.name}'", max_results=10_000):
            metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            rows.append({"name": rm.name, "version": str(mv.version),
                         "aliases": sorted(by_version.get(str(mv.version), [])),
                         "tags": dict(mv.tags), "run_id": mv.run_id, "metrics": dict(metrics)})
    return sorted(rows, key=lambda r: (r["name"], int(r["version"])))


def pull(client: MlflowClient, ref: str, out: Path) -> tuple[Path, Path]:
    """Write ``weights.pt`` (a state dict: ``torch.load(..., weights_only=True)``) and
    ``model_card.json`` (name, version, aliases, tags, params, metrics, data md5, commit,
    source URI) of model ``ref`` into folder ``out``. Returns both paths."""
    import torch

    from xiqa.io import atomic_path, write_json

    mv = model_version(client, ref)
    name, version = mv.name, str(mv.version)
    run = client.get_run(mv.run_id)
    aliases = sorted(a for a, v in client.get_registered_model(name).aliases.items()
                     if str(v) == version)
    model = load_model(f"models:/{name}/{version}")  # verifies weights_sha256
    out = Path(out)
    weights = out / "weights.pt"
    with atomic_path(weights) as tmp:
        torch.save(model.state_dict(), tmp)
    tags = dict(mv.tags)
    card = {
        "name": name, "version": version, "aliases": aliases, "reference": ref,
        "model_uri": f"models:/{name}/{version}", "tracking_uri": client.tracking_uri,
        "run_id": mv.run_id, "condition": tags.get("condition"), "seed": tags.get("seed"),
        "dataset": tags.get("dataset"), "arch": tags.get("arch"),
        "data_md5": tags.get("data_md5"), "git_commit": tags.get("git_commit"),
        "tags": tags, "params": dict(run.data.params), "metrics": dict(run.data.metrics),
        "weights": {"file": weights.name, "sha256": file_digest(weights, "sha256"),
                    "load": "xiqa.models.build(arch).load_state_dict("
                            "torch.load(file, weights_only=True))"},
    }
    write_json(out / "model_card.json", card)
    return weights, out / "model_card.json"
