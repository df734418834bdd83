"""``params.yaml``: the study's parameters, grouped by DVC stage and validated once at load time.

The defaults in this module are the paper's recipe (SPEC 3); the repository's ``params.yaml``
overrides them with a small demo scale so that ``dvc repro`` is fast on a 2-core CPU. Unknown
keys and wrong types are errors that name the key (``params.yaml: train.objectcxr.epochs: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xiqa.errors import XiqaError
from xiqa.schema import DATASETS, SMOOTH_KERNEL, SMOOTH_SIGMA, Arch, Dataset, Method, RandomCondition, ReportFormat


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no NaN or inf anywhere


# --------------------------------------------------------------------------- data / prepare
def _source(v: str) -> str:
    if not v.strip():
        raise ValueError('must be "phantom" or the path of a real dataset')
    return v.strip()


class ObjectCxrData(_Strict):
    """``data.objectcxr``: where Object-CXR comes from and, for phantoms, how many and how big."""
    source: str = "phantom"  # "phantom" or the path of a real Object-CXR folder
    n_images: int = Field(10_000, ge=4)  # phantoms only; half of them positive
    min_size: int = Field(1800, ge=32)  # phantoms only: side lengths vary in [min_size, max_size]
    max_size: int = Field(2200, ge=32)

    @field_validator("source")
    @classmethod
    def _check_source(cls, v: str) -> str:
        return _source(v)

    @model_validator(mode="after")
    def _sizes_ordered(self) -> ObjectCxrData:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})")
        return self


class LvotData(_Strict):
    """``data.lvot``: where LVOT comes from and, for phantoms, how many patients, slices and pixels."""
    source: str = "phantom"  # "phantom", a manifest CSV or a folder holding manifest.csv
    n_patients: int = Field(690, ge=3)  # phantoms only
    slices_per_patient: int = Field(25, ge=1)  # phantoms only
    size: int = Field(256, ge=32)  # phantoms only: square side in pixels

    @field_validator("source")
    @classmethod
    def _check_source(cls, v: str) -> str:
        return _source(v)


class DataParams(_Strict):
    """``data``: the `data` stage, per dataset."""
    seed: int = 0  # phantoms only
    objectcxr: ObjectCxrData = ObjectCxrData()
    lvot: LvotData = LvotData()

    def dataset(self, name: str) -> ObjectCxrData | LvotData:
        """The parameters of dataset ``name``."""
        return getattr(self, name)


class PrepareParams(_Strict):
    """``prepare``: the seeded patient-wise split fractions."""
    seed: int = 0
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> PrepareParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self

    @property
    def fractions(self) -> tuple[float, float, float]:
        """``(train, val, test)`` fractions, summing to 1."""
        return (self.train, self.val, self.test)


# --------------------------------------------------------------------------- grid
class GridModel(_Strict):
    """One dataset × architecture of the grid."""
    dataset: Dataset
    arch: Arch

    @property
    def key(self) -> str:
        """``<dataset>-<arch>``, as in the output folders."""
        return f"{self.dataset}-{self.arch}"


class GridParams(_Strict):
    """The study's grid: every cell × seed is trained, and randomised under each condition."""

    models: list[GridModel] = [
        GridModel(dataset="objectcxr", arch="resnet34"),
        GridModel(dataset="objectcxr", arch="efficientnet_b0"),
        GridModel(dataset="lvot", arch="resnet50"),
        GridModel(dataset="lvot", arch="efficientnet_b0"),
    ]
    seeds: list[int] = [1, 2, 3]
    randomised: list[RandomCondition] = ["sr", "fr"]
    # the architectures of ``models``, each once: the `pretrain` stage's cells (DVC's foreach
    # needs the list spelled out); empty: derived from ``models``
    archs: list[Arch] = []

    @model_validator(mode="after")
    def _archs_of_models(self) -> GridParams:
        wanted = list(dict.fromkeys(cell.arch for cell in self.models))
        if not self.archs:
            object.__setattr__(self, "archs", wanted)
        elif sorted(set(self.archs)) != sorted(wanted) or len(set(self.archs)) != len(self.archs):
            raise ValueError(f"archs must list each architecture of models once: {wanted}, got {self.archs}")
        return self

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"seeds must be a non-empty list without repeats, got {v}")
        return v


# --------------------------------------------------------------------------- train / randomise
class Recipe(_Strict):
    """``train.<dataset>``: the fine-tuning recipe of one dataset (the paper's Object-CXR recipe by default)."""
    image_size: int = Field(600, ge=32)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.005, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    step_size: int | None = Field(5, ge=1)  # schedule "step": x gamma every step_size epochs; None: constant
    gamma: float = Field(0.1, gt=0)
    # "step" (the paper's) or "cosine": half a cosine from lr to 0 over all steps, after the warm-up
    schedule: Literal["step", "cosine"] = "step"
    warmup_epochs: float = Field(0.0, ge=0)  # linear warm-up from lr / 10 over this many epochs
    pretrained: bool = True
    augment: bool = True
    max_train_images: int | None = Field(None, ge=1)  # None: the whole train split
    num_workers: int = Field(0, ge=0)
    # re-estimate BatchNorm statistics on this many training images (no augmentation) after
    # each epoch, before validation; 0: off (the paper's recipe)
    bn_recalibration: int = Field(0, ge=0)
    # training arithmetic: fp32, or autocast to bf16 (CUDA, or a CPU with AMX / AVX512-BF16) or
    # fp16 (CUDA only, with a gradient scaler); validation and saliency maps stay float32;
    # auto: bf16 where the machine has it and a probe shows it faster (xiqa/training/precision.py)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    channels_last: bool = False  # NHWC memory layout for the model and its inputs while training


def _paper_lvot_recipe() -> Recipe:
    return Recipe(image_size=224, epochs=60, batch_size=64, lr=0.0002, weight_decay=0.0005,
                  step_size=None)


class TrainParams(_Strict):
    """``train``: one :class:`Recipe` per dataset."""
    objectcxr: Recipe = Recipe()
    lvot: Recipe = Field(default_factory=_paper_lvot_recipe)

    def recipe(self, dataset: str) -> Recipe:
        """The recipe of ``dataset``."""
        return getattr(self, dataset)


class PretrainParams(_Strict):
    """``pretrain``: the stand-in for the ImageNet start (SPEC 3), trained once per architecture
    of the grid when no ImageNet weights are found (:mod:`xiqa.training.pretrain`).

    ``route``: ``fractal`` (FractalDB-style formula-driven classification,
    :mod:`xiqa.data.fractals`), ``rotation`` (self-supervised: which of four rotations, on the
    unlabelled *training* scans of every dataset of the grid) or ``none`` (no stand-in: models
    with ``pretrained: true`` and SR then need ImageNet weights)."""
    route: Literal["fractal", "rotation", "none"] = "fractal"
    classes: int = Field(100, ge=2)  # fractal: categories (random iterated function systems)
    per_class: int = Field(40, ge=1)  # fractal: rendered instances per category
    image_size: int = Field(64, ge=16)  # the pretext's input side (pixels)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(0.1, gt=0)  # SGD with Nesterov momentum 0.9, warm-up, then cosine to 0
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0


class RandomiseParams(_Strict):
    """``randomise``: where the ImageNet weights of the ``sr`` models come from."""
    imagenet_weights: str | None = None  # a file or folder of torchvision ImageNet weights


# --------------------------------------------------------------------------- evaluate / report
class ToleranceAt(_Strict):
    """The input side length (pixels) at which ``evaluate.tolerance`` holds, per dataset: the
    paper's inputs (Object-CXR 600 px, LVOT 224 px)."""

    objectcxr: int = Field(600, ge=1)
    lvot: int = Field(224, ge=1)


class EvaluateParams(_Strict):
    """``evaluate``: the Pointing Game, smoothing, methods and statistics of the evaluation."""
    # Pointing Game τ in pixels *at the input size tolerance_at.<dataset>* (the paper: 15 px at
    # 600 / 224 px); the study uses it scaled to its own input size, see tau_px
    tolerance: float = Field(15.0, gt=0)
    tolerance_at: ToleranceAt = ToleranceAt()
    target: Literal["predicted", "label"] = "predicted"
    batch_size: int = Field(8, ge=1)
    smooth_sigma: float = Field(SMOOTH_SIGMA, gt=0)
    smooth_kernel: int = Field(SMOOTH_KERNEL, ge=3)
    methods: list[Method] | None = None  # None: all ten
    layers: dict[str, dict[str, list[str]]] = {}  # arch -> {"single": [...], "multi": [...]}
    bootstrap: int = Field(1000, ge=10)
    permutations: int = Field(1000, ge=10)
    figure_samples: int = Field(4, ge=0)
    seed: int = 0
    # localisation beyond the Pointing Game (xiqa.evaluation.localisation): k of top-k as a
    # fraction of the image, and the centre-Gaussian baseline's sigma as a fraction of the side
    topk_fraction: float = Field(0.05, gt=0, le=1)
    centre_sigma: float = Field(0.25, gt=0)

    def tau_px(self, dataset: str, input_size: int) -> float:
        """τ in input pixels for ``dataset`` at a square input of side ``input_size``:
        ``tolerance · input_size / tolerance_at.<dataset>`` (the one place τ is scaled; e.g.
        15 px at 600 px is 3.2 px at 128 px, 15 px at 224 px is 7.5 px at 112 px)."""
        if dataset not in DATASETS:
            raise XiqaError(f"unknown dataset {dataset!r}: no evaluate.tolerance_at for it "
                            f"(known: {', '.join(DATASETS)})")
        if int(input_size) <= 0:
            raise XiqaError(f"input size must be positive, got {input_size}")
        # multiply first: the product of integers is exact, so one rounding (3.2, not 3.1999...)
        return self.tolerance * int(input_size) / getattr(self.tolerance_at, dataset)


class SanityParams(_Strict):
    """The sanity stage (MPRT and random logit, SPEC 6.1): ``samples`` test images with boxes,
    drawn once per dataset with ``seed`` (:func:`xiqa.evaluation.scoring.figure_sample`), explained
    for every trained seed at every randomisation step."""

    samples: int = Field(16, ge=1)
    seed: int = 0


class ReportParams(_Strict):
    """``report``: the formats the tables are written in."""
    formats: list[ReportFormat] = Field(default_factory=lambda: list(get_args(ReportFormat)))


class Params(_Strict):
    """The whole ``params.yaml``, one field per stage."""
    device: str = "cpu"
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    grid: GridParams = GridParams()
    train: TrainParams = TrainParams()
    pretrain: PretrainParams = PretrainParams()
    randomise: RandomiseParams = RandomiseParams()
    evaluate: EvaluateParams = EvaluateParams()
    sanity: SanityParams = SanityParams()
    report: ReportParams = ReportParams()


def _format_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<top level>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    value = first.get("input")
    shown = "" if first["type"] in ("extra_forbidden", "missing") or isinstance(value, dict) else f" (got {value!r})"
    more = len(err.errors()) - 1
    tail = f"; and {more} more problem{'s' if more > 1 else ''}" if more else ""
    return f"{path}: {key}: {msg}{shown}{tail}"


def parse_params(data: dict | None, source: Path | str = "params.yaml") -> Params:
    """Validate a params mapping; a problem raises :class:`XiqaError` naming the key."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise XiqaError(_format_error(Path(source), err)) from None


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise XiqaError(f"{path}: no such parameters file") from None
    except yaml.YAMLError as err:
        raise XiqaError(f"{path}: not valid YAML ({err})") from None
    if data is not None and not isinstance(data, dict):
        raise XiqaError(f"{path}: expected a mapping of stage names at the top level")
    return parse_params(data, path)
