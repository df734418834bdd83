"""What differs between the study's datasets, as one table: :data:`DATASET_SPECS` maps each name of
:data:`xiqa.schema.DATASETS` to its :class:`DatasetSpec` (reader, importer, phantom writer,
non-fatal problems), so that stages look a dataset up instead of testing its name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xiqa.data import lvot, objectcxr, phantoms
from xiqa.errors import XiqaError
from xiqa.params import LvotData, ObjectCxrData
from xiqa.schema import DATASETS

_Reader = Callable[..., pd.DataFrame]  # (source, decode=True, progress=False)
_Importer = Callable[..., pd.DataFrame]  # (source, target, progress=False)
_PhantomWriter = Callable[[Path, ObjectCxrData | LvotData, int, bool], None]  # (target, cfg, seed, progress)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how its distributed folder is read and imported, and its phantoms written."""

    name: str
    read_dataset: _Reader  # the raw folder as a table (``image_id``, ``label``, boxes, ...)
    import_dataset: _Importer  # validate ``source`` and copy it to ``target`` atomically
    write_phantoms: _PhantomWriter  # seeded phantoms in the real format, sized by ``data.<name>``
    problems: Callable[[pd.DataFrame], list[str]]  # one sentence per non-fatal problem found


def _objectcxr_phantoms(target: Path, cfg: ObjectCxrData | LvotData, seed: int, progress: bool) -> None:
    if not isinstance(cfg, ObjectCxrData):
        raise TypeError(f"objectcxr phantoms need data.objectcxr parameters, got {type(cfg).__name__}")
    phantoms.write_objectcxr(target, cfg.n_images, cfg.min_size, cfg.max_size, seed, progress=progress)


def _lvot_phantoms(target: Path, cfg: ObjectCxrData | LvotData, seed: int, progress: bool) -> None:
    if not isinstance(cfg, LvotData):
        raise TypeError(f"lvot phantoms need data.lvot parameters, got {type(cfg).__name__}")
    phantoms.write_lvot(target, cfg.n_patients, cfg.slices_per_patient, cfg.size, seed, progress=progress)


def _no_problems(_df: pd.DataFrame) -> list[str]:
    return []  # Object-CXR's reader rejects what it cannot use; nothing is only worth a warning


# keyed by exactly xiqa.schema.DATASETS, the one list of the study's names (tests/test_names.py)
DATASET_SPECS: dict[str, DatasetSpec] = {
    "objectcxr": DatasetSpec("objectcxr", objectcxr.read_dataset, objectcxr.import_dataset,
                             _objectcxr_phantoms, _no_problems),
    "lvot": DatasetSpec("lvot", lvot.read_dataset, lvot.import_dataset, _lvot_phantoms, lvot.problems),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; an unknown name is a :class:`XiqaError`."""
    try:
        return DATASET_SPECS[name]
    except KeyError:
        raise XiqaError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None
