"""The model registry, writing side: register a trained / randomised model and move its aliases
(SPEC 7); :mod:`xiqa.tracking.lookup` looks models up, loads them and pulls them for an audit.

One registered model per dataset × architecture, ``xiqa-<dataset>-<arch>``; each condition ×
seed is a version tagged ``condition``, ``seed``, ``data_md5``, ``git_commit`` (plus ``dataset``,
``arch``, ``image_size`` and, when measured, ``val_auc``) and aliased ``<condition>-s<seed>``;
``best`` points at the ``trained-s*`` version with the highest validation AUC.

Models are logged with ``serialization_format="pickle"`` (the whole ``nn.Module``): MLflow's
default ``pt2`` format loads back as an exported graph on which module hooks never fire (SPEC 10),
and saliency needs hooks. Load one with :func:`xiqa.tracking.lookup.load_model` (or
``mlflow.pytorch.load_model("models:/xiqa-objectcxr-resnet34@trained-s1")``).

Each version also carries ``weights_sha256``: the SHA-256 of its weights file
(``data/model.pth`` in the model artifact), hashed from the local copy before it is uploaded;
:mod:`xiqa.tracking.lookup` checks it on every download.

``data_md5`` is the md5 DVC gives the folder ``data/prepared/<dataset>`` (the splits, boxes and
image list the run used), computed here the way DVC computes a directory hash
(:func:`dvc_dir_md5`) rather than read from ``dvc.lock``, so it is right outside ``dvc repro``
too; it is also logged as the run's input dataset (``mlflow.log_input``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xiqa.errors import XiqaError
from xiqa.paths import alias as alias_name
from xiqa.paths import prepared_dir, registered_model_name

if TYPE_CHECKING:

    from mlflow import MlflowClient
    from torch import nn

MODEL_ARTIFACT = "model"
WEIGHTS_FILE = "data/model.pth"  # what mlflow.pytorch writes for serialization_format="pickle"
WEIGHTS_TAG = "weights_sha256"
BEST = "best"


# --------------------------------------------------------------------------- data version
def dvc_dir_md5(folder: Path) -> str:
    """The md5 DVC 3 records for directory ``folder`` (``<md5>.dir``): md5 of the JSON list of
    ``{"md5": <file md5>, "relpath": <posix path>}`` sorted by path (``json.dumps`` with
    ``sort_keys=True``), as ``dvc_data.hashfile.tree.Tree.digest`` builds it. Hidden files
    are included, as DVC does without a ``.dvcignore`` rule."""
    folder = Path(folder)
    if not folder.is_dir():
        raise XiqaError(f"{folder}: prepared data not found (run `dvc repro prepare` first)")
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        entries.append({"md5": file_digest(path), "relpath": path.relative_to(folder).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """The hex digest of a file, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def data_md5(root: Path, dataset: str) -> str:
    """DVC md5 of ``data/prepared/<dataset>`` under project ``root``."""
    return dvc_dir_md5(prepared_dir(Path(root), dataset))


def log_data_input(root: Path, dataset: str, md5: str) -> None:
    """Record the prepared data of the active run as its input dataset (digest = DVC md5)."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    folder = prepared_dir(Path(root), dataset).resolve()
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(folder.as_uri())
    # mlflow marks Dataset.profile @abstractmethod without making Dataset an ABC: instantiable
    dataset_input = MetaDataset(source, name=f"{dataset}-prepared", digest=md5)  # type: ignore[abstract]
    mlflow.log_input(dataset_input, context="training")


# --------------------------------------------------------------------------- registering
@dataclass(frozen=True)
class Registered:
    """A registered model version, as the stage pointer records it."""

    name: str
    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>: immutable, unlike an alias
    alias: str

    def pointer(self, **extra: Any) -> dict[str, Any]:
        """The JSON pointer a stage writes for this version, with ``extra`` keys."""
        return {"status": "registered", "name": self.name, "version": self.version,
                "run_id": self.run_id, "model_uri": self.model_uri, "alias": self.alias, **extra}


def signature(image_size: int, num_classes: int = 2):
    """Input float32 ``[-1, 3, S, S]`` (normalised), output float32 logits ``[-1, classes]``."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, image_size, image_size), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), "logits")]))


def pip_requirements(library: str) -> list[str]:
    """Exact requirements of a logged model (no inference: it is slow and guesses): torch,
    torchvision and ``library``, the distribution that builds the architecture
    (:attr:`xiqa.models.zoo.ArchSpec.library`)."""
    from importlib.metadata import version

    reqs = list(dict.fromkeys(["torch", "torchvision", library]))
    return [f"{r}=={version(r).split('+')[0]}" for r in reqs]


def register(model: nn.Module, *, dataset: str, arch: str, library: str, condition: str,
             seed: int, image_size: int, data_md5: str, git_commit: str,
             val_auc: float | None = None, start: str | None = None) -> Registered:
    """Log ``model`` (pickle format; ``library``: the distribution that builds ``arch``, a
    requirement of the logged model) in the active run, register it as a new version of
    ``xiqa-<dataset>-<arch>`` with its tags, point ``<condition>-s<seed>`` at it and, for
    ``trained``, recompute ``best``. ``start`` (``imagenet``, ``stand-in:<run id>`` or
    ``scratch``) is tagged and said in the version's description. Call it last in a run: a
    failure before it registers nothing."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register() needs an active MLflow run")
    name = registered_model_name(dataset, arch)
    model_uri, sha256 = _log_pickled(model, library, signature(image_size))
    tags = {"condition": condition, "seed": str(seed), "data_md5": data_md5,
            "git_commit": git_commit, "dataset": dataset, "arch": arch,
            "image_size": str(image_size), WEIGHTS_TAG: sha256}
    if val_auc is not None:
        tags["val_auc"] = repr(float(val_auc))
    if start is not None:
        tags["start"] = start
    mv = mlflow.register_model(model_uri, name, tags=tags)
    client = mlflow.MlflowClient()
    if start is not None:
        client.update_model_version(name, mv.version, description=describe_start(condition, seed, start))
    alias = alias_name(condition, seed)
    client.set_registered_model_alias(name, alias, mv.version)
    if condition == "trained":
        update_best(client, name)
    return Registered(name, str(mv.version), run.info.run_id, f"models:/{name}/{mv.version}", alias)


def _log_pickled(model: nn.Module, library: str, model_signature: Any) -> tuple[str, str]:
    """Log ``model`` in the active run as the ``model`` artifact (pickle format, so hooks work
    after loading; ``library`` a requirement) with ``model_signature``; returns its model URI and
    the SHA-256 of the weights file as written (what :func:`load_model` checks)."""
    from mlflow.models import Model

    quiet = logging.getLogger("mlflow.pytorch")  # its pickle warning: a deliberate choice (SPEC 10)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    flavor = _HashingPytorchFlavor()
    try:  # what mlflow.pytorch.log_model does, with a flavor that hashes the file it saves
        info = Model.log(
            artifact_path=None, name=MODEL_ARTIFACT, flavor=flavor, flavor_name="mlflow.pytorch",
            pytorch_model=model.cpu().eval(), serialization_format="pickle",
            signature=model_signature, pip_requirements=pip_requirements(library))
    finally:
        quiet.setLevel(level)
    if flavor.sha256 is None:
        raise RuntimeError(f"mlflow.pytorch.save_model wrote no {WEIGHTS_FILE}")
    return info.model_uri, flavor.sha256


def register_stand_in(model: nn.Module, *, arch: str, library: str, image_size: int,
                      tags: dict[str, str]) -> Registered:
    """Log a `pretrain` stand-in backbone (pickle format, its pretext head included) in the active
    run and register it as a new version of ``xiqa-pretrain-<arch>`` with ``tags``, aliased
    ``stand-in``."""
    import mlflow

    from xiqa.paths import pretrain_model_name

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register_stand_in() needs an active MLflow run")
    name = pretrain_model_name(arch)
    classes = getattr(_head_of(model), "out_features", 2)
    model_uri, sha256 = _log_pickled(model, library, signature(image_size, classes))
    mv = mlflow.register_model(model_uri, name, tags={**tags, "arch": arch, WEIGHTS_TAG: sha256})
    client = mlflow.MlflowClient()
    client.update_model_version(name, mv.version, description=(
        f"Stand-in start of {arch} (no ImageNet weights offline): pretext {tags.get('route')}, "
        f"run {run.info.run_id}; the trained and SR models record it as start stand-in:{run.info.run_id}."))
    client.set_registered_model_alias(name, "stand-in", mv.version)
    return Registered(name, str(mv.version), run.info.run_id, f"models:/{name}/{mv.version}", "stand-in")


def _head_of(model: nn.Module) -> nn.Module | None:
    from torch import nn as tnn

    linears = [m for m in model.modules() if isinstance(m, tnn.Linear)]
    return linears[-1] if linears else None


def describe_start(condition: str, seed: int, start: str) -> str:
    """The registered version's description: its condition and seed, and where its backbone
    started (``imagenet``, ``stand-in:<pretrain run id>`` or ``scratch``)."""
    what = {"imagenet": "ImageNet weights", "scratch": "random initialisation (no pretraining)"}
    origin = what.get(start) or f"the stand-in pretraining of MLflow run {start.split(':', 1)[1]}"
    return f"{condition} model, seed {seed}; backbone start: {start} ({origin})."


class _HashingPytorchFlavor:
    """``mlflow.pytorch`` as the ``flavor`` of ``mlflow.models.Model.log`` (a module with
    ``save_model``), remembering the SHA-256 of the weights file it saved locally, before the
    upload: the hash is of what xiqa wrote, not of what the store received."""

    __name__ = "mlflow.pytorch"

    def __init__(self) -> None:
        self.sha256: str | None = None

    def save_model(self, path: str, mlflow_model: Any, **kwargs: Any) -> None:
        import mlflow.pytorch

        mlflow.pytorch.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        weights = Path(path) / WEIGHTS_FILE
        self.sha256 = file_digest(weights, "sha256") if weights.is_file() else None


def update_best(client: MlflowClient, name: str) -> str | None:
    """Point ``best`` at the version, among those holding a ``trained-s*`` alias, with the
    highest ``val_auc`` tag (ties: the lower seed). Returns that version (None: no candidate)."""
    aliases = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    current = {v for a, v in aliases.items() if a.startswith("trained-s")}
    ranked = []
    for version in current:
        mv = client.get_model_version(name, version)
        auc = float(mv.tags.get("val_auc", "nan"))
        ranked.append((-math.inf if math.isnan(auc) else auc, -int(mv.tags.get("seed", 0)), str(version)))
    if not ranked:
        return None
    best = max(ranked)[2]
    if aliases.get(BEST) != best:
        client.set_registered_model_alias(name, BEST, best)
    return best


def discard_versions(client: MlflowClient, run_id: str) -> list[tuple[str, str]]:
    """Delete every model version registered from run ``run_id`` (a run that did not finish must
    leave none for an alias to point at) and recompute ``best`` of each model touched. Returns
    the ``(name, version)`` pairs deleted."""
    found = client.search_model_versions(f"run_id = '{run_id}'")
    for mv in found:
        client.delete_model_version(mv.name, mv.version)
    for name in sorted({mv.name for mv in found}):
        update_best(client, name)
    return [(mv.name, str(mv.version)) for mv in found]
