"""What the ``evaluate`` and ``sanity`` stages share for one grid cell (dataset × arch).

:func:`each_version` is their loop over model pointers: a skipped model (SR without ImageNet
weights) is passed through as ``{status: skipped, reason}`` without a run.
:func:`load_pointer_model` loads the registered model a pointer names.
:class:`CellContext` is what every model version of the cell shares, set up once: the test split
as the models take it, its boxes and the images that have one, the methods, and the provenance
every run is tagged with (:meth:`CellContext.run_tags`); :func:`log_tables` logs a run's tables
as CSV artifacts. :class:`xiqa.evaluation.run.EvaluationCell` and
:class:`xiqa.evaluation.sanity_run.SanityCell` build on it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from xiqa import paths
from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.io import read_pointer, write_json
from xiqa.params import Params

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from xiqa.data.dataset import Split

__all__ = ["CellContext", "each_version", "load_pointer_model", "log_tables"]

CellT = TypeVar("CellT")


def each_version(root: Path, dataset: str, arch: str, versions: Iterable[tuple[str, int]],
                 out_path: Callable[[str, int], Path], open_cell: Callable[[], CellT],
                 echo: Callable[[str], None]) -> Iterator[tuple[CellT, dict, str, int, Path]]:
    """``(cell, pointer, condition, seed, out)`` for every ``(condition, seed)`` in ``versions``
    whose model is not skipped.

    Every model pointer is read first, so a missing one fails before any work. A skipped model
    is passed through: ``{status: skipped, reason}`` is written at ``out_path(condition, seed)``
    and one line echoed. ``open_cell()`` (what the versions share: the test split, the store) is
    called once, when the first model that is not skipped comes."""
    pointers = {(c, s): read_pointer(paths.model_pointer(root, dataset, arch, c, s)) for c, s in versions}
    cell: CellT | None = None
    for (condition, seed), pointer in pointers.items():
        out = out_path(condition, seed)
        if pointer.get("status") == "skipped":
            reason = pointer.get("reason", "no reason given")
            write_json(out, {"status": "skipped", "reason": reason})
            echo(f"{dataset}-{arch} {condition}-s{seed}: skipped ({reason})")
            continue
        if cell is None:
            cell = open_cell()
        yield cell, pointer, condition, seed, out


def load_pointer_model(pointer: dict, device: str) -> nn.Module:
    """The registered model a pointer names, on ``device``; one that cannot be loaded is a
    :class:`XiqaError` naming the URI and what failed."""
    import pickle

    from mlflow.exceptions import MlflowException

    from xiqa.tracking import lookup

    try:
        return lookup.load_model(pointer["model_uri"], device)
    # the store lost the model or cannot be reached (MlflowException, OSError), its files are
    # corrupt (UnpicklingError, RuntimeError), or it was pickled by other code (ImportError)
    except (MlflowException, OSError, RuntimeError, ImportError, pickle.UnpicklingError) as err:
        raise XiqaError(f"{pointer['model_uri']}: cannot load the model ({type(err).__name__}: {err})") from None


class CellContext:
    """What every model version of one grid cell shares: the test split, its boxes, the methods,
    the store."""

    def __init__(self, root: Path, params: Params, dataset: str, arch: str, split: Split | None = None) -> None:
        """``split``: the test split as the models take it (default: the prepared one at
        ``train.<dataset>.image_size``, ImageNet-normalised)."""
        from xiqa import saliency
        from xiqa.data.dataset import load_split, read_boxes
        from xiqa.tracking import provenance, registry, store

        self.root, self.params, self.dataset, self.arch = root, params, dataset, arch
        self.split = split or load_split(root, dataset, "test", params.train.recipe(dataset).image_size)
        self.image_size = self.split.image_size
        self.boxes = read_boxes(paths.prepared_dir(root, dataset) / "boxes.csv")
        self.scored = [i for i in self.split.ids if len(self.boxes.get(i, ())) > 0]  # the images with a box
        self.methods = list(params.evaluate.methods or saliency.METHODS)
        unknown = [m for m in self.methods if m not in saliency.METHODS]
        if unknown:
            raise XiqaError(f"params.yaml: evaluate.methods: unknown method(s) {', '.join(unknown)}")
        store.ensure_store(root)
        self.git_commit = provenance.git_commit(root)
        self.data_md5 = registry.data_md5(root, dataset)

    def run_tags(self, kind: str, pointer: dict, condition: str, seed: int,
                 extra_tags: Mapping[str, str] | None = None) -> dict[str, str]:
        """The tags of a ``kind`` run (``evaluation``, ``sanity``) on the model version of
        ``pointer``: the cell, the version it scored and the provenance, then ``extra_tags``."""
        return {S.KIND: kind, "dataset": self.dataset, "arch": self.arch, "condition": condition,
                "seed": str(seed),
                "model_name": pointer.get("name") or paths.registered_model_name(self.dataset, self.arch),
                "model_version": str(pointer.get("version", "")), "model_run_id": pointer["run_id"],
                "model_uri": pointer["model_uri"], "git_commit": self.git_commit,
                "data_md5": self.data_md5} | dict(extra_tags or {})


def log_tables(tables: Mapping[str, pd.DataFrame]) -> None:
    """Log each ``{file name: table}`` as a CSV artifact (no index) of the active MLflow run."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        for name, table in tables.items():
            table.to_csv(Path(tmp) / name, index=False)
            mlflow.log_artifact(str(Path(tmp) / name))
