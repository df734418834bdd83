"""``xiqa audit``: the evaluate and sanity stages' work on a classifier registered outside xiqa.

The model is a version of the MLflow registry (``models:/NAME/VERSION`` or ``NAME@ALIAS``)
that someone logged with plain ``mlflow.pytorch.log_model``, in MLflow's ``pickle`` or ``pt2``
format (:mod:`xiqa.tracking.foreign`). Its layer presets and randomisation cascade are derived
from the network (:func:`xiqa.models.zoo.adopt`); its **input convention** is stated by the
caller or by the version's tags (:data:`CONVENTION_TAGS`), never guessed:

- ``image_size``: the side S of the square input; the prepared test split (cached at
  ``train.<dataset>.image_size``) is resized to it (bilinear, antialiased) when it differs;
- ``channels``: 1 (grayscale) or 3 (grayscale replicated);
- ``mean`` / ``std``: per-channel normalisation of pixel values in [0, 1];
- ``positive_class``: the logit of "the quality problem is present" (label 1).

It then plays the Pointing Game on the test split of a prepared dataset (an evaluation run in
``xiqa-<dataset>``, as the evaluate stage logs), runs MPRT and the random-logit check (a sanity
run), both tagged ``xiqa.audit = true``, ``arch`` = ``<NAME>/v<VERSION>``, ``condition`` =
``trained``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from xiqa.data.dataset import Split
from xiqa.errors import XiqaError
from xiqa.params import Params
from xiqa.schema import DATASETS

AUDIT_TAG = "xiqa.audit"
CONVENTION_TAGS = ("image_size", "channels", "mean", "std", "positive_class")


@dataclass(frozen=True)
class InputConvention:
    """How the audited model takes an image (module doc)."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    positive_class: int

    def as_params(self) -> dict[str, str]:
        """The convention as run tags (``input_size``, ``input_channels``, ...)."""
        return {"input_size": str(self.image_size), "input_channels": str(self.channels),
                "input_mean": ",".join(f"{v:g}" for v in self.mean),
                "input_std": ",".join(f"{v:g}" for v in self.std), "positive_class": str(self.positive_class)}


def _floats(key: str, text: str, channels: int) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * channels
    if len(values) != channels or not all(math.isfinite(v) for v in values):
        raise XiqaError(f"{key}: expected {channels} comma-separated numbers (one per channel), got {text!r}")
    if key == "std" and min(values) <= 0:
        raise XiqaError(f"std: every value must be positive, got {text!r}")
    return values


def input_convention(tags: Mapping[str, str], given: Mapping[str, object | None]) -> InputConvention:
    """The convention from ``given`` (the command's flags, ``None`` = not given) or else the model
    version's ``tags``; anything still missing or malformed is one :class:`XiqaError` naming it."""
    value = {k: given.get(k) if given.get(k) is not None else tags.get(k) for k in CONVENTION_TAGS}
    missing = [k for k, v in value.items() if v is None or str(v).strip() == ""]
    if missing:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in missing)
        raise XiqaError(f"the input convention of this model is not stated: {', '.join(missing)} missing; "
                        f"pass {flags} or tag the model version with {', '.join(missing)}")
    ints = {}
    for key in ("image_size", "channels", "positive_class"):
        try:
            ints[key] = int(str(value[key]))
        except ValueError:
            raise XiqaError(f"{key}: expected an integer, got {value[key]!r}") from None
    if ints["image_size"] < 8:
        raise XiqaError(f"image_size: expected at least 8 pixels, got {ints['image_size']}")
    if ints["channels"] not in (1, 3):
        raise XiqaError(f"channels: expected 1 or 3, got {ints['channels']}")
    if ints["positive_class"] < 0:
        raise XiqaError(f"positive_class: expected a logit index >= 0, got {ints['positive_class']}")
    return InputConvention(ints["image_size"], ints["channels"], _floats("mean", str(value["mean"]), ints["channels"]),
                           _floats("std", str(value["std"]), ints["channels"]), ints["positive_class"])


@dataclass(frozen=True, eq=False)
class ConventionSplit(Split):
    """A prepared split resized to the convention's side, normalised the model's way."""

    channels: int = 3
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def inputs(self, index: slice | torch.Tensor | list[int] = slice(None)) -> torch.Tensor:
        """Float32 ``[n, channels, S, S]``: ``(pixel / 255 - mean) / std`` per channel."""
        x = self.images[index].float().div_(255.0)
        x = x.expand(*x.shape[:-3], self.channels, *x.shape[-2:])
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (x - mean) / std


def convention_split(split: Split, convention: InputConvention) -> ConventionSplit:
    """``split`` (uint8 ``[N, 1, S0, S0]``) at the convention's side, with its normalisation."""
    import torch.nn.functional as F

    images = split.images
    size = convention.image_size
    if images.shape[-1] != size:
        resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                                antialias=True)
        images = resized.round_().clamp_(0, 255).to(torch.uint8)
    return ConventionSplit(split.dataset, split.split, size, images, split.labels, split.ids, split.sizes,
                           convention.channels, convention.mean, convention.std)


@dataclass
class AuditResult:
    """What one audit logged: the model's derived presets and the two runs' summaries."""

    name: str
    version: str
    arch: str
    format: str
    presets: dict[str, tuple[str, ...]]
    evaluation: dict
    sanity: dict | None  # None when the sanity checks were refused (the reason is echoed)


def audit_model(root: Path, params: Params, ref: str, dataset: str, given: Mapping[str, object | None],
                out: Path, echo: Callable[[str], None] = print) -> AuditResult:
    """Audit registered model ``ref`` on prepared ``dataset`` (module doc); summaries are written
    as ``out/evaluation.json`` and ``out/sanity.json``."""
    import mlflow

    from xiqa.data.dataset import load_split
    from xiqa.evaluation.run import EvaluationCell
    from xiqa.evaluation.sanity_run import SanityCell
    from xiqa.models import zoo
    from xiqa.models.derive import check_cascade
    from xiqa.models.init import reinitialise
    from xiqa.tracking import lookup, store
    from xiqa.tracking.foreign import PT2, load_logged_model

    if dataset not in DATASETS:
        raise XiqaError(f"--dataset: unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    store.ensure_store(root)
    mv = lookup.model_version(mlflow.MlflowClient(), ref)
    convention = input_convention(mv.tags, given)
    uri = f"models:/{mv.name}/{mv.version}"
    split = convention_split(load_split(root, dataset, "test", params.train.recipe(dataset).image_size), convention)
    loaded = load_logged_model(uri, params.device)
    shape = loaded.input_shape
    batch = params.evaluate.batch_size
    if shape is not None:
        want = (convention.channels, convention.image_size, convention.image_size)
        if len(shape) != 4 or any(s is not None and s != w for s, w in zip(shape[1:], want, strict=True)):
            raise XiqaError(f"{uri}: exported for inputs {list(shape)}, but the convention says "
                            f"[N, {want[0]}, {want[1]}, {want[2]}]")
        if shape[0] is not None:
            batch = shape[0]  # a static batch dimension: every forward must have exactly this many images
    arch = f"{mv.name}/v{mv.version}"
    model = loaded.module
    spec = zoo.adopt(model, arch, size=convention.image_size, channels=convention.channels, batch=batch)
    check_cascade(model, zoo.cascade(arch))
    presets = zoo.layers(arch, params.evaluate.layers.get(arch))
    with torch.no_grad():
        logits = model(split.inputs(list(range(min(batch, len(split))))).to(params.device))
    if convention.positive_class >= logits.shape[1]:
        raise XiqaError(f"positive_class: {convention.positive_class} is not a logit of this model "
                        f"({logits.shape[1]} classes)")
    echo(f"{uri} ({loaded.format}): Grad-CAM at {spec.gradcam}, NormGrad single {spec.single[0]}, "
         f"multi {len(presets['multi'])} layers, {len(zoo.cascade(arch))} randomisation steps")
    tags = {AUDIT_TAG: "true", "model_format": loaded.format} | convention.as_params()
    pointer = {"name": mv.name, "version": str(mv.version), "run_id": mv.run_id or "", "model_uri": uri}
    run_params = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"batch_size": batch})})
    out = Path(out)
    cell = EvaluationCell(root, run_params, dataset, arch, split=split)
    cell.positive = convention.positive_class
    evaluation = cell.evaluate(pointer, "trained", 0, out / "evaluation.json", echo, model=model, extra_tags=tags)
    sanity, refused = None, None
    if loaded.format == PT2:  # an exported program cannot be deep-copied (symbolic shapes)
        refused = (f"the sanity checks cannot run on {uri}: MPRT re-initialises a copy of the model layer "
                   "by layer, and a pt2 model's layers are graph operations that cannot be copied or "
                   "re-initialised by kind (log it with serialization_format='pickle' for MPRT)")
    else:
        try:  # MPRT re-initialises every parameter: refuse before the run if one has no rule
            reinitialise(copy.deepcopy(model), torch.Generator().manual_seed(0))
        except TypeError as err:
            refused = f"the sanity checks (MPRT) cannot run on {uri}: {err}"
    if refused is not None:
        echo(refused)
    if refused is None:
        sanity = SanityCell(root, run_params, dataset, arch, split=split).check(
            pointer, params.sanity.seed, out / "sanity.json", model=model, extra_tags=tags)
    return AuditResult(mv.name, str(mv.version), arch, loaded.format, presets, evaluation, sanity)
