"""Architectures by name and their saliency layer presets, derived from the network
(:mod:`xiqa.models.derive`); the study's four are cached here as data.

An architecture name (``grid.models[].arch``) is one of

- the study's four, ``resnet34``, ``resnet50``, ``efficientnet_b0`` (torchvision),
  ``efficientnet-b0`` (efficientnet-pytorch), whose presets are the paper's (:data:`ARCH_SPECS`,
  :data:`CASCADES`): the derived ones, multi-layer NormGrad cut at the paper's depth J
  (:data:`PAPER_DEPTH`);
- any torchvision classification constructor (``densenet121``, ``resnet18``,
  ``mobilenet_v3_small``, ``convnext_tiny``, ``regnet_y_400mf``, ...);
- any efficientnet-pytorch name (``efficientnet-b3``);
- ``package.module:callable``: a factory of the user's own ``nn.Module`` (called with no
  arguments), imported when the model is built.

For all but the study's four, the head, the layers and the MPRT cascade are derived once per
name from a freshly built model (:func:`spec`, :func:`cascade`); a model that xiqa did not build
is *adopted* under a name of the caller's choosing (:func:`adopt`, used by ``xiqa audit``). The
study's four are not derived at run time: :data:`ARCH_SPECS` and :data:`CASCADES` are a cache of
``derive(constructor(arch)(), depth=PAPER_DEPTH[arch])``, which ``tests/models/test_derive.py``
checks entry for entry. Deriving costs a probe forward at 224 px in every process that names the
architecture (every stage, every ``xiqa`` command): measured with ``time`` on this project's
2-core CPU machine (shared with a running experiment), ``derive`` of ``resnet50`` took 2.4 to
3.9 s and a process that builds ``resnet50`` went from 5.5 s to 9.8 s with it; ``efficientnet_b0``
took 3.4 s.

``build(arch)`` returns a classifier whose head is a fresh ``num_classes``-way ``nn.Linear``,
He-initialised (Kaiming normal, fan-in, bias 0). ``ARCH_SPECS[arch]`` holds, per architecture, the
attribute path of that head and the layers the saliency methods read (SPEC 4):

- ``gradcam``: the layer whose output Grad-CAM weights (the last block / last feature block);
- ``single``:  the one layer of single-layer NormGrad;
- ``multi``:   the layers of multi-layer NormGrad, shallow to deep.

A layer is named by its dotted module path (``layer4.2``, ``features.8.2``) and means that
module's output. ``<path>:input`` means the first positional input of a module instead; it names
tensors that no module returns exactly once per forward (see efficientnet-pytorch below).

Layer mapping between the two EfficientNet-B0 implementations (same network, same tensors):

=====================  ===============================  ====================================
torchvision            efficientnet-pytorch             tensor
=====================  ===============================  ====================================
``features.0.0``       ``_conv_stem``                   stem conv output (before BN)
``features.k.0``       ``_blocks.i``, i = 0 1 3 5 8 11 15  output of the first MBConv of stage k=1..7
``features.8.0``       ``_conv_head``                   head 1×1 conv output (before BN)
``features.8.2``       ``_avg_pooling:input``           final SiLU output (the last feature map)
=====================  ===============================  ====================================

efficientnet-pytorch applies one ``_swish`` module at both the stem and the head (SPEC 10), so a
hook on ``_swish`` fires twice per forward; the final feature map is therefore read as the input
of ``_avg_pooling``, which runs once.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from xiqa.errors import XiqaError


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: how to build it, where its head is, which layers saliency reads."""

    name: str
    library: str  # the distribution that builds it: "torchvision", "efficientnet-pytorch" or "torch"
    head: str  # dotted path of the final nn.Linear ("": the network has none)
    gradcam: str
    single: tuple[str, ...]
    multi: tuple[str, ...]


# The paper's multi-layer NormGrad depth J per study architecture: the deepest J derived layers
# (None: all of them). No structural rule gives both choices (see xiqa.models.derive's docstring);
# derived, ResNet has 6 (conv1, layer1.0 ... layer4.0, layer4.2) and EfficientNet-B0 10.
PAPER_DEPTH: dict[str, int | None] = {"resnet34": 4, "resnet50": 4, "efficientnet_b0": None, "efficientnet-b0": None}

# The cache of derive(constructor(arch)(), depth=PAPER_DEPTH[arch]) (see the module doc).
_RESNET_MULTI = ("layer2.0", "layer3.0", "layer4.0", "layer4.2")
_TV_EFFNET_MULTI = ("features.0.0", *(f"features.{k}.0" for k in range(1, 8)),
                    "features.8.0", "features.8.2")
# First block of each of the 7 stages (repeats 1, 2, 2, 3, 3, 4, 1).
_EP_STAGE_STARTS = (0, 1, 3, 5, 8, 11, 15)
_EP_EFFNET_MULTI = ("_conv_stem", *(f"_blocks.{i}" for i in _EP_STAGE_STARTS),
                    "_conv_head", "_avg_pooling:input")

# keyed by exactly xiqa.schema.ARCHS, the one list of the study's names (tests/test_names.py)
ARCH_SPECS: dict[str, ArchSpec] = {
    "resnet34": ArchSpec("resnet34", "torchvision", "fc", "layer4", ("layer4.2",), _RESNET_MULTI),
    "resnet50": ArchSpec("resnet50", "torchvision", "fc", "layer4", ("layer4.2",), _RESNET_MULTI),
    "efficientnet_b0": ArchSpec("efficientnet_b0", "torchvision", "classifier.1", "features.8",
                                ("features.8.2",), _TV_EFFNET_MULTI),
    "efficientnet-b0": ArchSpec("efficientnet-b0", "efficientnet-pytorch", "_fc",
                                "_avg_pooling:input", ("_avg_pooling:input",), _EP_EFFNET_MULTI),
}

LAYER_KEYS = ("gradcam", "single", "multi")

# Model-parameter randomisation test (Adebayo et al. 2018): the blocks re-initialised one after
# another, from the logits down; each step is a group of module paths. Together they cover every
# parameter. The two EfficientNet-B0 implementations get the same ten steps: head, last 1x1 conv
# + BN, the seven MBConv stages (efficientnet-pytorch numbers blocks, not stages), stem. Cached,
# as ARCH_SPECS is: derive(constructor(arch)()).cascade.
_RESNET_CASCADE = (("fc",), ("layer4",), ("layer3",), ("layer2",), ("layer1",), ("conv1", "bn1"))
_EP_STAGES = tuple(tuple(f"_blocks.{i}" for i in range(a, b))
                   for a, b in zip(_EP_STAGE_STARTS, (*_EP_STAGE_STARTS[1:], 16), strict=True))
CASCADES: dict[str, tuple[tuple[str, ...], ...]] = {
    "resnet34": _RESNET_CASCADE,
    "resnet50": _RESNET_CASCADE,
    "efficientnet_b0": (("classifier",), *((f"features.{k}",) for k in range(8, -1, -1))),
    "efficientnet-b0": (("_fc",), ("_conv_head", "_bn1"), *_EP_STAGES[::-1], ("_conv_stem", "_bn0")),
}


_EP_NAME = re.compile(r"^efficientnet-b[0-8]$")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# derived specs and cascades of names other than the study's (built once per process) and of
# adopted models (xiqa audit)
_DERIVED: dict[str, tuple[ArchSpec, tuple[tuple[str, ...], ...]]] = {}


def cascade(arch: str) -> tuple[tuple[str, ...], ...]:
    """The randomisation steps of ``arch`` (see :data:`CASCADES`), logits first; derived
    (:func:`xiqa.models.derive.derive`) for an architecture other than the study's four."""
    if arch in CASCADES:
        return CASCADES[arch]
    return _derived(arch)[1]


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)


def _library(arch: str) -> str:
    if arch in ARCH_SPECS:
        return ARCH_SPECS[arch].library
    if _EP_NAME.match(arch):
        return "efficientnet-pytorch"
    if _FACTORY.match(arch):
        return "torch"
    if arch in _torchvision_names():
        return "torchvision"
    raise XiqaError(f"unknown architecture {arch!r}: not a torchvision classification model "
                    "(torchvision.models.list_models), an efficientnet-pytorch name (efficientnet-b0 … b8) "
                    "or a 'package.module:callable' factory")


def constructor(arch: str) -> Callable[[], nn.Module]:
    """A function building ``arch`` with its library's own initialisation and head (no weights
    loaded): what :func:`build` starts from and ImageNet weights are checked against."""
    library = _library(arch)
    if library == "torchvision":
        import torchvision.models as tvm

        return lambda: tvm.get_model(arch, weights=None)
    if library == "efficientnet-pytorch":
        from efficientnet_pytorch import EfficientNet

        return lambda: EfficientNet.from_name(arch)
    module_name, _, attr = arch.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise XiqaError(f"architecture {arch!r}: cannot import {attr!r} from {module_name!r} "
                        f"({type(err).__name__}: {err})") from None
    if not callable(factory):
        raise XiqaError(f"architecture {arch!r}: {attr!r} is not callable")

    def make() -> nn.Module:
        model = factory()
        if not isinstance(model, nn.Module):
            raise XiqaError(f"architecture {arch!r}: {attr}() returned a {type(model).__name__}, not an nn.Module")
        return model

    return make


def _derived(arch: str) -> tuple[ArchSpec, tuple[tuple[str, ...], ...]]:
    if arch not in _DERIVED:
        from xiqa.models.derive import derive

        library = _library(arch)
        with torch.random.fork_rng(devices=[]):  # build(arch) stays deterministic under manual_seed
            found = derive(constructor(arch)())
        _DERIVED[arch] = (ArchSpec(arch, library, found.head or "", found.gradcam, (found.single,), found.multi),
                          found.cascade)
    return _DERIVED[arch]


def adopt(model: nn.Module, name: str, *, size: int | None = None, channels: int = 3, batch: int = 2) -> ArchSpec:
    """Derive the presets and cascade of ``model`` (one that xiqa did not build, e.g. a registered
    model under audit; probed on a [``batch``, ``channels``, ``size``, ``size``] batch) and make
    them the presets of architecture ``name`` in this process."""
    from xiqa.models.derive import PROBE_SIZE, derive

    found = derive(model, size=size or PROBE_SIZE, channels=channels, batch=batch)
    _DERIVED[name] = (ArchSpec(name, "torch", found.head or "", found.gradcam, (found.single,), found.multi),
                      found.cascade)
    return _DERIVED[name][0]


def spec(arch: str) -> ArchSpec:
    """The :class:`ArchSpec` of ``arch``: the study's table, else derived from a freshly built
    model (once per process); an unknown name is a :class:`XiqaError`."""
    if arch in ARCH_SPECS:
        return ARCH_SPECS[arch]
    return _derived(arch)[0]


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` (a trailing ``:input`` is ignored here)."""
    name = path.split(":", 1)[0]
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise XiqaError(f"layer {path!r} does not exist in this {type(model).__name__}") from None


def _head_path(arch: str) -> str:
    path = spec(arch).head
    if not path:
        raise XiqaError(f"{arch} has no linear layer giving its logits, so its head cannot be replaced")
    return path


def head(model: nn.Module, arch: str) -> nn.Linear:
    """The model's final linear layer."""
    found = get_module(model, _head_path(arch))
    if not isinstance(found, nn.Linear):
        raise XiqaError(f"the head {_head_path(arch)!r} of this {arch} is a {type(found).__name__}, "
                        "not a linear layer")
    return found


def reset_head(model: nn.Module, arch: str, num_classes: int | None = None) -> nn.Linear:
    """Replace (``num_classes`` given) or re-initialise the head: He normal weights, zero bias."""
    path = _head_path(arch)
    old = head(model, arch)
    new = nn.Linear(old.in_features, num_classes or old.out_features)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    nn.init.kaiming_normal_(new.weight)  # fan_in, gain sqrt(2): He et al. 2015
    nn.init.zeros_(new.bias)
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attr, new)
    return new


def build(arch: str, num_classes: int = 2) -> nn.Module:
    """A fresh ``arch`` classifier with a He-initialised ``num_classes``-way head, in train mode.

    Deterministic under ``torch.manual_seed``; the ImageNet backbone is loaded afterwards by
    :func:`xiqa.models.init.initialise` (which :mod:`xiqa.models.weights` serves).
    """
    spec(arch)
    if num_classes < 1:
        raise XiqaError(f"num_classes must be at least 1, got {num_classes}")
    model = constructor(arch)()
    reset_head(model, arch, num_classes)
    return model


def layers(arch: str, overrides: Mapping[str, Sequence[str]] | None = None) -> dict[str, tuple[str, ...]]:
    """The layer presets of ``arch`` as ``{"gradcam": (name,), "single": (name,), "multi": (...)}``,
    with any key of ``overrides`` (same keys, e.g. ``EvaluateParams.layers[arch]``) replacing it."""
    s = spec(arch)
    out = {"gradcam": (s.gradcam,), "single": s.single, "multi": s.multi}
    for key, names in (overrides or {}).items():
        if key not in out:
            raise XiqaError(f"layers.{arch}: unknown key {key!r}; expected one of {', '.join(LAYER_KEYS)}")
        names = (names,) if isinstance(names, str) else tuple(names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise XiqaError(f"layers.{arch}.{key}: expected a non-empty list of layer names, got {names!r}")
        out[key] = names
    for key in ("gradcam", "single"):
        if len(out[key]) != 1:
            raise XiqaError(f"layers.{arch}.{key}: expected exactly one layer, got {list(out[key])}")
    return out


def check_layers(model: nn.Module, names: Sequence[str]) -> None:
    """Raise a :class:`XiqaError` naming the first layer that ``model`` does not have."""
    for name in names:
        if name.count(":") > 1 or (":" in name and not name.endswith(":input")):
            raise XiqaError(f"layer {name!r}: the only suffix understood is ':input'")
        get_module(model, name)


def estimate_bn_statistics(model: nn.Module, batches: Sequence[torch.Tensor]) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``batches``
    (train mode, ``momentum=None``, no grad), then restore momenta and put the model in eval mode.

    A freshly initialised EfficientNet-B0 is degenerate in eval mode (SPEC 10); this gives random
    models meaningful activations for tests and benchmarks."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    return model.eval()
