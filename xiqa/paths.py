"""Where every artefact of a xiqa project lives, relative to the project root.

One place for the layout so that stages, the library and the CLI agree:

- ``data/raw/<dataset>/``            the `data` stage: phantoms or the validated import, in the
                                     dataset's real distribution format
- ``data/prepared/<dataset>/``       the `prepare` stage: ``splits.csv``, ``boxes.csv``,
                                     ``images.csv`` (``image_id, path, width, height``; ``path``
                                     relative to the raw folder)
- ``models/<dataset>-<arch>/<condition>/s<seed>.json``  pointers written by `train` /
                                     `randomise` (``run_id``, ``model_uri``, ``version`` or
                                     ``status: skipped`` with a ``reason``)
- ``models/pretrain/<arch>/``        the `pretrain` stage: ``start.json`` (which start the
                                     trained and SR models of ``arch`` get) and, for a stand-in,
                                     ``weights.pt`` (a torchvision-format state dict)
- ``eval/<dataset>-<arch>/<condition>-s<seed>.json``     pointers written by `evaluate`
- ``sanity/<dataset>-<arch>/trained-s<seed>.json``      summaries written by `sanity` (MPRT
                                     and random logit of a trained model, with its run id)
- ``metrics/``, ``plots/``, ``reports/``                 the study's outputs: DVC metrics (the
                                     headline), DVC plots, tables and full metric sets
- ``mlflow.db``, ``mlruns/``         the embedded MLflow store (git- and dvc-ignored)
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ENV = "XIQA_PROJECT"


def project_root(start: Path | None = None) -> Path:
    """The project root: ``$XIQA_PROJECT`` if set, else the nearest folder holding ``params.yaml``
    or ``dvc.yaml`` at or above ``start`` (default: the working directory), else ``start``."""
    env = os.environ.get(PROJECT_ENV)
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() or (folder / "dvc.yaml").is_file():
            return folder
    return here


def raw_dir(root: Path, dataset: str) -> Path:
    """``data/raw/<dataset>/``: the `data` stage's output."""
    return root / "data" / "raw" / dataset


def prepared_dir(root: Path, dataset: str) -> Path:
    """``data/prepared/<dataset>/``: the `prepare` stage's output."""
    return root / "data" / "prepared" / dataset


def model_key(dataset: str, arch: str) -> str:
    """``objectcxr-resnet34``: the folder name of a dataset × architecture cell."""
    return f"{dataset}-{arch}"


def registered_model_name(dataset: str, arch: str) -> str:
    """The MLflow registered model of a dataset × architecture: ``xiqa-objectcxr-resnet34``."""
    # MLflow forbids ':' in a model name; a `module:callable` architecture gets a '.' instead
    return f"xiqa-{model_key(dataset, arch)}".replace(":", ".")


def model_pointer(root: Path, dataset: str, arch: str, condition: str, seed: int) -> Path:
    """``models/<dataset>-<arch>/<condition>/s<seed>.json``: a registered model's pointer."""
    return root / "models" / model_key(dataset, arch) / condition / f"s{seed}.json"


def pretrain_dir(root: Path, arch: str) -> Path:
    """``models/pretrain/<arch>/``: the `pretrain` stage's output (``start.json``, ``weights.pt``)."""
    return root / "models" / "pretrain" / arch


def pretrain_model_name(arch: str) -> str:
    """The MLflow registered model of an architecture's stand-in start: ``xiqa-pretrain-resnet34``."""
    return f"xiqa-pretrain-{arch}"


def eval_pointer(root: Path, dataset: str, arch: str, condition: str, seed: int) -> Path:
    """``eval/<dataset>-<arch>/<condition>-s<seed>.json``: an evaluation run's pointer."""
    return root / "eval" / model_key(dataset, arch) / f"{condition}-s{seed}.json"


def sanity_pointer(root: Path, dataset: str, arch: str, seed: int) -> Path:
    """``sanity/<dataset>-<arch>/trained-s<seed>.json``: a sanity run's summary."""
    return root / "sanity" / model_key(dataset, arch) / f"trained-s{seed}.json"


def alias(condition: str, seed: int) -> str:
    """Registry alias of a condition × seed: ``trained-s2``, ``fr-s1``, ``sr-s3``."""
    return f"{condition}-s{seed}"
