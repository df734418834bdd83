"""One tracked, registered model per call: what the `train` and `randomise` stages do.

Order matters for interruption: everything that can fail for a user reason (data, ImageNet
weights, device) is checked before the MLflow run starts; the model is registered last inside
the run; the DVC pointer is written (atomically) only after the run has finished. So an
exception or SIGTERM mid-training leaves a FAILED / KILLED run, no registered version and no
pointer, and the next ``dvc repro`` simply runs the stage again.

A stage is one unit for DVC, so its runs are marked complete (``xiqa.stage_complete``) only once
its last pointer is written: ``train`` and ``randomise`` register every seed in one process (one
interpreter start with torch, torchvision and MLflow per cell, not per seed), and when one is
killed after a seed or two, the rerun first marks the finished runs of the dead process KILLED
and deletes their versions (:func:`xiqa.tracking.owners.reap_stale_runs`), so that each seed ends
with one FINISHED run and one version. A rerun of a stage that did complete (``dvc repro`` after
a change, ``--force``) registers new versions, as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xiqa.params import Params
from xiqa.paths import model_pointer, registered_model_name

if TYPE_CHECKING:
    from xiqa.models.weights import Start


def _context(root: Path, dataset: str) -> dict[str, str]:
    from xiqa.tracking.provenance import git_commit
    from xiqa.tracking.registry import data_md5

    return {"data_md5": data_md5(root, dataset), "git_commit": git_commit(root)}


def _splits(root: Path, dataset: str, image_size: int, names: tuple[str, ...]):
    from xiqa.data.dataset import load_split

    return [load_split(root, dataset, name, image_size) for name in names]


def train_models(root: Path, params: Params, dataset: str, arch: str, seeds: Iterable[int],
                 device: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Fine-tune ``arch`` on ``dataset`` once per seed of ``seeds``, in turn (recipe
    ``params.train.<dataset>``), log every epoch, register each kept epoch as ``trained-s<seed>``;
    returns the pointers. The seeds are one unit, as in :func:`randomise_models`: the runs are
    marked complete only after the last pointer is written, so a rerun after an interruption
    replaces the seeds already registered instead of registering them twice."""
    from xiqa.models.weights import resolve_start
    from xiqa.tracking.runs import mark_complete
    from xiqa.training.loop import resolve_device

    seeds = list(seeds)
    recipe = params.train.recipe(dataset)
    device = device or params.device
    resolve_device(device)  # every user error before the first run starts
    ctx = _context(root, dataset)
    start = resolve_start(root, arch, params.randomise.imagenet_weights) if recipe.pretrained else None
    pointers = [_train(root, params, dataset, arch, seed, device, ctx, start, progress) for seed in seeds]
    mark_complete([p["run_id"] for p in pointers])
    return pointers


def train_model(root: Path, params: Params, dataset: str, arch: str, seed: int,
                device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """:func:`train_models` for one seed; returns its pointer."""
    return train_models(root, params, dataset, arch, [seed], device, progress)[0]


def _train(root: Path, params: Params, dataset: str, arch: str, seed: int, device: str,
           ctx: dict[str, str], start: Start | None, progress: bool) -> dict[str, Any]:
    """One seed of :func:`train_models`, seeded at its start as if it ran alone; its run is left
    marked incomplete."""
    import mlflow

    from xiqa.models import build, spec
    from xiqa.models.init import initialise
    from xiqa.tracking.registry import log_data_input, register
    from xiqa.tracking.runs import tracked_run
    from xiqa.training.loop import resolve_device, score, seed_everything, train
    from xiqa.training.precision import choose_precision

    recipe = params.train.recipe(dataset)
    train_split, val_split, test_split = _splits(root, dataset, recipe.image_size,
                                                 ("train", "val", "test"))
    train_split = train_split.head(recipe.max_train_images)
    seed_everything(seed)
    model = build(arch)
    initialise(model, arch, "trained", seed, pretrained=recipe.pretrained,
               weights=start.path if start else None)
    label = start.label if start else "scratch"
    # precision: auto is settled here, by a probe on a copy of the model (its RNG state restored)
    choice = choose_precision(recipe.precision, model, (recipe.batch_size, 3, recipe.image_size, recipe.image_size),
                              resolve_device(device), channels_last=recipe.channels_last)
    recipe = recipe.model_copy(update={"precision": choice.precision})
    run_params = {"dataset": dataset, "arch": arch, "condition": "trained", "seed": seed,
                  "device": device, **recipe.model_dump(), "n_train": len(train_split),
                  "n_val": len(val_split), "n_test": len(test_split),
                  "imagenet_weights": params.randomise.imagenet_weights, "start": label, **ctx,
                  **choice.params()}
    tags = {**_tags(dataset, arch, "trained", seed, ctx), "start": label}
    with tracked_run(root, dataset, f"trained-{arch}-s{seed}", run_params, tags):
        log_data_input(root, dataset, ctx["data_md5"])
        result = train(model, train_split, val_split, recipe, seed=seed, device=device,
                       progress=progress,
                       on_epoch=lambda log: mlflow.log_metrics(log.metrics(), step=log.epoch))
        test = score(model, test_split, recipe.batch_size, device)
        metrics = {"best_epoch": result.best_epoch, "best_val_accuracy": result.val_accuracy,
                   "best_val_auc": result.val_auc, "test_accuracy": test.accuracy,
                   "test_auc": test.auc}
        mlflow.log_metrics(metrics)
        registered = register(model, dataset=dataset, arch=arch, library=spec(arch).library,
                              condition="trained", seed=seed, image_size=recipe.image_size,
                              val_auc=result.val_auc, start=label, **ctx)
    return _write_pointer(root, dataset, arch, "trained", seed,
                          registered.pointer(**_about(dataset, arch, "trained", seed), **ctx,
                                             start=label, metrics=metrics))


def pretrain_model(root: Path, params: Params, arch: str, device: str | None = None) -> dict[str, Any]:
    """The `pretrain` stage: decide the start of ``arch``'s trained and SR models and write
    ``models/pretrain/<arch>/start.json``. Real ImageNet weights win (the pointer only says so);
    ``pretrain.route: none`` writes a pointer without a start; otherwise the stand-in is trained
    (:mod:`xiqa.training.pretrain`), logged (experiment ``xiqa-pretrain``: pretext loss and
    accuracy per epoch, images/s, seconds), registered as ``xiqa-pretrain-<arch>`` and written
    as ``weights.pt``, a torchvision-format state dict. Returns the pointer."""
    from xiqa.io import atomic_path, write_json
    from xiqa.models.weights import WeightsUnavailable, resolve_imagenet_weights
    from xiqa.paths import pretrain_dir

    p = params.pretrain
    folder = pretrain_dir(root, arch)
    weights_file = folder / "weights.pt"
    about = {"arch": arch, "route": p.route}
    try:
        found = resolve_imagenet_weights(arch, params.randomise.imagenet_weights)
    except WeightsUnavailable as err:
        reason = str(err)
    else:
        return _write_start(folder, {"start": "imagenet", "imagenet_weights": str(found), **about})
    if p.route == "none":
        return _write_start(folder, {"start": "none", "reason": f"pretrain.route is none; {reason}", **about})

    import mlflow
    import torch

    from xiqa.models import build, spec
    from xiqa.tracking.owners import COMPLETE_TAG
    from xiqa.tracking.provenance import git_commit
    from xiqa.tracking.registry import register_stand_in
    from xiqa.tracking.runs import experiment_run, mark_complete
    from xiqa.tracking.store import experiment_id
    from xiqa.training import pretrain as pt
    from xiqa.training.loop import resolve_device, seed_everything

    dev = resolve_device(device or params.device)
    if p.route == "fractal":
        data = pt.fractal_data(p)
    else:  # the training splits only: no label, no validation or test scan
        datasets = sorted({cell.dataset for cell in params.grid.models})
        data = pt.rotation_data([s.images for s in (_splits(root, d, params.train.recipe(d).image_size,
                                                             ("train",))[0] for d in datasets)], p.image_size)
    seed_everything(p.seed, dev)
    model = build(arch, num_classes=data.classes)
    run_params = {"arch": arch, **p.model_dump(), "n_images": len(data.images), "device": str(dev),
                  "render_seconds": round(data.seconds, 3)}
    tags = {"xiqa.kind": "pretrain", "arch": arch, "route": p.route, "git_commit": git_commit(root),
            COMPLETE_TAG: "false"}  # until start.json is written
    with experiment_run(experiment_id(root, "xiqa-pretrain"), f"pretrain-{arch}", tags, run_params) as run:
        history = pt.pretrain(model, data, p, device=dev,
                              on_epoch=lambda log: mlflow.log_metrics(log.metrics(), step=log.epoch))
        seconds = sum(h.epoch_seconds for h in history)
        mlflow.log_metrics({"pretext_seconds": seconds, "final_pretext_accuracy": history[-1].pretext_accuracy,
                            "final_pretext_loss": history[-1].pretext_loss})
        label = f"stand-in:{run.info.run_id}"
        with atomic_path(weights_file) as tmp:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
        registered = register_stand_in(model, arch=arch, library=spec(arch).library,
                                       image_size=p.image_size, tags={"route": p.route, "start": label})
    pointer = {"start": label, "weights": weights_file.name, **about, **registered.pointer(),
               "pretext_seconds": round(seconds, 3), "pretext_accuracy": history[-1].pretext_accuracy}
    write_json(folder / "start.json", pointer)
    mark_complete([run.info.run_id])
    return pointer


def _write_start(folder: Path, pointer: dict[str, Any]) -> dict[str, Any]:
    """A `pretrain` pointer without a stand-in: any earlier stand-in's weights go."""
    from xiqa.io import write_json

    (folder / "weights.pt").unlink(missing_ok=True)
    write_json(folder / "start.json", pointer)
    return pointer


def randomise_models(root: Path, params: Params, dataset: str, arch: str, condition: str,
                     seeds: Iterable[int], device: str | None = None) -> list[dict[str, Any]]:
    """:func:`randomise_model` for each of ``seeds`` in turn, as one unit: the runs are marked
    complete only after the last pointer is written, so a rerun after an interruption replaces
    the seeds already registered instead of registering them twice. Returns the pointers."""
    from xiqa.tracking.runs import mark_complete

    pointers = [_randomise(root, params, dataset, arch, condition, s, device) for s in seeds]
    mark_complete([p["run_id"] for p in pointers if p["status"] == "registered"])
    return pointers


def randomise_model(root: Path, params: Params, dataset: str, arch: str, condition: str,
                    seed: int, device: str | None = None) -> dict[str, Any]:
    """Build ``arch`` in condition ``sr`` or ``fr`` for ``seed``, measure it on the val and
    test splits, register it as ``<condition>-s<seed>``; returns the pointer. ``sr`` without
    ImageNet weights writes a ``skipped`` pointer with the reason and logs nothing."""
    return randomise_models(root, params, dataset, arch, condition, [seed], device)[0]


def _randomise(root: Path, params: Params, dataset: str, arch: str, condition: str,
               seed: int, device: str | None) -> dict[str, Any]:
    """One seed of :func:`randomise_models`; its run is left marked incomplete."""
    from xiqa.models.weights import WeightsUnavailable, resolve_start

    if condition not in ("sr", "fr"):
        raise ValueError(f"condition must be sr or fr, got {condition!r}")
    about = _about(dataset, arch, condition, seed)
    start = None
    if condition == "sr":  # decided before torch and MLflow are imported: a skip costs ~1 s
        try:
            start = resolve_start(root, arch, params.randomise.imagenet_weights)
        except WeightsUnavailable as err:
            return _write_pointer(root, dataset, arch, condition, seed,
                                  {"status": "skipped", "reason": str(err), **about})
    weights = start.path if start else None
    label = start.label if start else None  # FR has no start: every parameter is drawn

    import mlflow
    import torch

    from xiqa.models import build, spec
    from xiqa.models.init import initialise
    from xiqa.tracking.registry import log_data_input, register
    from xiqa.tracking.runs import tracked_run
    from xiqa.training.loop import resolve_device, score
    recipe = params.train.recipe(dataset)
    device = device or params.device
    dev = resolve_device(device)
    ctx = _context(root, dataset)
    val_split, test_split = _splits(root, dataset, recipe.image_size, ("val", "test"))
    torch.manual_seed(seed)
    model = initialise(build(arch), arch, condition, seed, weights=weights).to(dev)
    run_params = {"dataset": dataset, "arch": arch, "condition": condition, "seed": seed,
                  "device": device, "image_size": recipe.image_size,
                  "imagenet_weights": params.randomise.imagenet_weights if condition == "sr" else None,
                  "start": label, **ctx}
    tags = {**_tags(dataset, arch, condition, seed, ctx), **({"start": label} if label else {})}
    with tracked_run(root, dataset, f"{condition}-{arch}-s{seed}", run_params, tags):
        log_data_input(root, dataset, ctx["data_md5"])
        val = score(model, val_split, recipe.batch_size, dev)
        test = score(model, test_split, recipe.batch_size, dev)
        metrics = {"val_accuracy": val.accuracy, "val_auc": val.auc,
                   "test_accuracy": test.accuracy, "test_auc": test.auc}
        mlflow.log_metrics(metrics)
        registered = register(model, dataset=dataset, arch=arch, library=spec(arch).library,
                              condition=condition, seed=seed, image_size=recipe.image_size,
                              data_md5=ctx["data_md5"], git_commit=ctx["git_commit"], start=label)
    return _write_pointer(root, dataset, arch, condition, seed,
                          registered.pointer(**about, **ctx, start=label, metrics=metrics))


def _tags(dataset: str, arch: str, condition: str, seed: int, ctx: dict[str, str]) -> dict[str, str]:
    from xiqa.tracking.owners import COMPLETE_TAG

    return {"condition": condition, "seed": str(seed), "dataset": dataset, "arch": arch, **ctx,
            COMPLETE_TAG: "false"}  # until the stage's last pointer is written


def _about(dataset: str, arch: str, condition: str, seed: int) -> dict[str, Any]:
    return {"dataset": dataset, "arch": arch, "condition": condition, "seed": seed,
            "name": registered_model_name(dataset, arch)}


def _write_pointer(root: Path, dataset: str, arch: str, condition: str, seed: int,
                   pointer: dict[str, Any]) -> dict[str, Any]:
    import math

    from xiqa.io import write_json

    if "metrics" in pointer:  # strict JSON: an undefined AUC (one class only) becomes null
        pointer["metrics"] = {k: None if isinstance(v, float) and math.isnan(v) else v
                              for k, v in pointer["metrics"].items()}
    write_json(model_pointer(root, dataset, arch, condition, seed), pointer)
    return pointer
