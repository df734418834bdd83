"""Gather what the ``report`` stage aggregates: exactly the evaluation pointers the grid in
``params.yaml`` names (never a folder listing, so a model dropped from the grid drops out of every
aggregate), each evaluation run's per-image and baseline CSVs, figure maps, model-run metrics and
learning curves fetched from MLflow, and the ``sanity`` stage's summaries of the trained seeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xiqa import paths
from xiqa import schema as S
from xiqa.errors import XiqaError
from xiqa.evaluation.samples import SampleMaps
from xiqa.io import read_pointer
from xiqa.params import Params

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

Key = tuple[str, str, str]  # dataset, arch, condition


@dataclass
class StudyInputs:
    """Everything gathered from the grid's evaluation and sanity pointers (and their runs)."""

    frames: dict[Key, list[tuple[int, pd.DataFrame]]] = field(default_factory=dict)  # per seed
    baselines: dict[Key, list[pd.DataFrame]] = field(default_factory=dict)
    geometry: dict[str, dict] = field(default_factory=dict)  # dataset -> τ and how it was derived
    samples: dict[tuple[str, str, str, int], SampleMaps] = field(default_factory=dict)
    skipped: dict[Key, str] = field(default_factory=dict)
    starts: dict[Key, list[str]] = field(default_factory=dict)  # the backbone start of each seed's model
    precisions: dict[Key, list[str]] = field(default_factory=dict)  # each trained seed's training precision
    # learning curves of the trained models {(ds, arch, seed): {metric: [(epoch, value)]}} and of
    # the stand-in starts {start: {metric: [(epoch, value)]}}
    curves: dict[tuple[str, str, int], dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    pretext: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    classif: dict[Key, list[dict[str, float]]] = field(default_factory=dict)  # model runs' metrics
    sanity: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    # methods that could not run on a model (Guided Backprop on a GELU network), per key: {m: why}
    not_applicable: dict[Key, dict[str, str]] = field(default_factory=dict)

    def applicable(self, key: Key) -> list[str]:
        """The grid's methods that ran on the models of ``key``."""
        return [m for m in self.methods if m not in self.not_applicable.get(key, {})]


def gather(root: Path, params: Params, client: MlflowClient, tmp: Path) -> StudyInputs:
    """Read every evaluation pointer of the grid and its run's artifacts (into ``tmp``)."""
    grid, found = StudyInputs(), None
    cells = params.grid
    for cell in cells.models:
        for cond in S.CONDITIONS:
            if cond != "trained" and cond not in cells.randomised:
                grid.skipped[(cell.dataset, cell.arch, cond)] = "not in params.yaml grid.randomised"
                continue
            for seed in cells.seeds:
                key = (cell.dataset, cell.arch, cond)
                pointer_path = paths.eval_pointer(root, cell.dataset, cell.arch, cond, seed)
                pointer = read_pointer(pointer_path)
                if pointer.get("status") == "skipped":
                    grid.skipped.setdefault(key, pointer.get("reason", "no reason given"))
                    continue
                dst = tmp / f"{cell.key}-{cond}-s{seed}"
                dst.mkdir()
                artifacts = EvaluationArtifacts(client, pointer, pointer_path, dst)
                frame = artifacts.csv("per_image.csv")
                grid.frames.setdefault(key, []).append((seed, frame))
                if pointer.get("start"):
                    grid.starts.setdefault(key, []).append(pointer["start"])
                grid.baselines.setdefault(key, []).append(artifacts.csv("baselines.csv"))
                this = _geometry(pointer, pointer_path)
                if grid.geometry.setdefault(cell.dataset, this) != this:
                    raise XiqaError(f"{pointer_path}: evaluated at {this}, other {cell.dataset} models at "
                                    f"{grid.geometry[cell.dataset]}: rerun `dvc repro evaluate`")
                refused = pointer.get("not_applicable") or {}
                grid.not_applicable.setdefault(key, {}).update(refused)
                run_methods = list(dict.fromkeys([*frame["method"], *refused]))
                if found is None:
                    found = run_methods
                elif set(run_methods) != set(found):
                    raise XiqaError(f"{pointer_path}: scored methods {run_methods} differ from the other "
                                    f"models' {found}: rerun `dvc repro evaluate`")
                npz = artifacts.path("figure_maps.npz", required=False)
                if npz is not None:
                    grid.samples[(*key, seed)] = SampleMaps.load(npz)
                model_run = artifacts.model_run()
                grid.classif.setdefault(key, []).append(dict(model_run.data.metrics))
                if precision := model_run.data.params.get("precision"):
                    grid.precisions.setdefault(key, []).append(precision)
                if cond == "trained":
                    grid.curves[(cell.dataset, cell.arch, seed)] = artifacts.histories(
                        pointer["model_run_id"], ("train_loss", "val_auc"))
                    start = pointer.get("start") or ""
                    if start.startswith("stand-in:") and start not in grid.pretext:
                        grid.pretext[start] = artifacts.histories(
                            start.split(":", 1)[1], ("pretext_loss", "pretext_accuracy"))
    if found is None:
        raise XiqaError("params.yaml: the grid has no evaluated model (every one was skipped)")
    grid.sanity = {(c.dataset, c.arch): _sanity(root, c.dataset, c.arch, cells.seeds) for c in cells.models}
    grid.methods = [m for m in S.METHODS if m in found] + [m for m in found if m not in S.METHODS]
    return grid


class EvaluationArtifacts:
    """One evaluation run's artifacts, fetched from the tracking store into ``dst``.

    Every failure names the pointer and the run, and says which of two things went wrong: the
    run lacks the artifact (rerun the evaluation), or the store could not be read (network,
    login, permissions, disk: the error MLflow or the OS gave)."""

    def __init__(self, client: MlflowClient, pointer: dict, pointer_path: Path, dst: Path) -> None:
        self.client, self.pointer, self.pointer_path, self.dst = client, pointer, pointer_path, dst
        self.run_id = pointer["run_id"]
        self.names = {a.path for a in self._call("list the artifacts of", lambda: client.list_artifacts(self.run_id))}

    def _call(self, what: str, fn: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn()
        except (MlflowException, OSError) as err:
            raise XiqaError(f"{self.pointer_path}: cannot {what} run {self.run_id} "
                            f"({type(err).__name__}: {err})") from None

    def path(self, name: str, required: bool = True) -> Path | None:
        """The local copy of artifact ``name``; None when it is absent and not ``required``."""
        import mlflow

        if name not in self.names:
            if not required:
                return None
            raise XiqaError(f"{self.pointer_path}: run {self.run_id} has no {name} artifact: "
                            "rerun `dvc repro evaluate`")
        return Path(self._call(f"download {name} of", lambda: mlflow.artifacts.download_artifacts(
            run_id=self.run_id, artifact_path=name, dst_path=str(self.dst))))

    def csv(self, name: str) -> pd.DataFrame:
        """The CSV artifact ``name`` (``per_image.csv``, ``baselines.csv``) as a frame."""
        import pandas as pd

        return pd.read_csv(self.path(name))

    def histories(self, run_id: str, keys: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
        """The metric histories ``keys`` of run ``run_id`` as ``[(step, value)]`` sorted by step
        (a key the run never logged is left out)."""
        out = {}
        for key in keys:
            history = self._call(f"read the {key} history of model run {run_id}, evaluated by",
                                 lambda k=key: self.client.get_metric_history(run_id, k))
            if history:
                out[key] = sorted((int(m.step), float(m.value)) for m in history)
        return out

    def model_run(self) -> Any:
        """The training / randomisation run of the evaluated model (its final metrics, its params)."""
        return self._call(f"read model run {self.pointer['model_run_id']} evaluated by",
                          lambda: self.client.get_run(self.pointer["model_run_id"]))


def _geometry(pointer: dict, pointer_path: Path) -> dict:
    """``{tau_px, tolerance, tolerance_at, image_size}`` as the evaluation pointer records them."""
    keys = (S.TAU, "tolerance", "tolerance_at", "image_size")
    missing = [k for k in keys if pointer.get(k) is None]
    if missing:
        raise XiqaError(f"{pointer_path}: missing {', '.join(missing)} (written before τ was logged): "
                        "rerun `dvc repro evaluate`")
    return {k: pointer[k] for k in keys}


def _sanity(root: Path, ds: str, arch: str, seeds: list[int]) -> list[dict]:
    """The ``sanity`` stage's summaries of the trained seeds (a skipped model or a stage not run
    yet has none: Table 9 then says so)."""
    out = []
    for seed in seeds:
        path = paths.sanity_pointer(root, ds, arch, seed)
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise XiqaError(f"{path}: not valid JSON ({err})") from None
        if data.get("status") == "skipped":
            continue
        missing = [k for k in ("mprt", "final_step", "blocks", "random_logit_ssim") if k not in data]
        if missing:
            raise XiqaError(f"{path}: missing {', '.join(missing)}: rerun `dvc repro sanity`")
        out.append(data)
    return out

