"""Layer presets and the randomisation cascade of any CNN classifier, derived from the network.

:func:`derive` runs the model **once** on a probe batch with a forward pre-hook and a forward
hook on every module, and reads from what ran:

- which modules ran, in what order, how often (a hook on a module that runs twice, like
  efficientnet-pytorch's shared ``_swish``, would see two tensors: such a module is never named);
- every module's output tensor (its identity, version counter and shape) and first input.

Why a probe forward and not ``torch.fx``: the layers saliency reads are the ones its forward
hooks see, so the derivation uses the very mechanism :mod:`xiqa.saliency.capture` uses; fx
cannot trace efficientnet-pytorch's input-dependent padding or a user's Python control flow, and
an fx graph names call sites, not the module hooks fire on. The probe costs one no-grad forward
at ``PROBE_SIZE`` px (every spatial map of a stride-32 network is then at least 7 × 7, so a map
is told from a globally pooled 1 × 1 tensor by its size alone).

From that record, with ``F`` the *last feature map* (the last 4-D output [N, C, h, w] with
h·w > 1 to be completed):

- ``head``: the last ``nn.Linear`` to run whose output has the logits' width;
- ``gradcam``: the outermost module that returns ``F`` (run once, ``F`` not changed in place
  before its parent returns it) whose direct children all return maps of ``F``'s size (a stage or
  block, not the whole feature extractor); ``single``: the innermost such module. With no such
  module (efficientnet-pytorch) the first module run once with ``F`` as input: ``<name>:input``;
- the *trunk*: the innermost module whose output is ``F`` or the logits and whose direct children
  span several resolutions; its *elements* are its children that ran (a child ``ModuleList``,
  which never runs, gives its own children), keeping those with parameters and a spatial output;
- *stages*: maximal runs of consecutive elements with the same output (channels, h, w);
- ``multi``: per stage, its first element (descended into while it is an ``nn.Sequential``, to
  the first child returning the stage's shape), shallow to deep, then ``single``; ``depth`` (the
  paper's J) keeps the deepest ``depth`` of these, so ``multi`` always ends with ``single``;
- ``cascade``: the modules with parameters that ran after ``F`` (the head's container), then the
  stages from deep to shallow; anything with parameters left over (parameters owned directly by
  the trunk or the root, modules that never ran) is a last step, so every parameter is
  re-initialised exactly once.

The paper's multi-layer presets are these layers cut at a depth J of its choosing, and no
structural rule gives its two choices (probed at 224 px; stages as derived above):

- ResNet-34/50: derived ``conv1`` (112 px, 64 ch, stride-2 stem), ``layer1.0`` (56 px, 64/256 ch,
  no downsampling), ``layer2.0``, ``layer3.0``, ``layer4.0`` (28, 14, 7 px, each downsampling),
  ``layer4.2``; the paper keeps the last 4 (J = 4).
- EfficientNet-B0: derived stem (112 px, 32 ch, stride 2), the first MBConv of each of the seven
  stages (112, 56, 28, 14, 14, 7, 7 px; 16 … 320 ch), the head conv, the last map; the paper
  keeps all 10.

By resolution, the paper drops ResNet's 112 and 56 px layers but keeps EfficientNet's; by stride,
it drops ResNet's stride-2 stem and keeps EfficientNet's, and drops ResNet's non-downsampling
``layer1`` but keeps EfficientNet's stage 1; by channels, it drops 64 (ResNet-34's ``layer1``)
and keeps 16; by block type, it drops ``layer1.0``, a block of the same type as the ``layer2.0``
it keeps, and keeps EfficientNet's plain stem conv while dropping ResNet's. The paper's choice is
therefore one number per architecture (:data:`xiqa.models.zoo.PAPER_DEPTH`), not a rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from xiqa.errors import XiqaError

PROBE_SIZE = 224


@dataclass(frozen=True)
class Derived:
    """What :func:`derive` found: dotted module paths (``<path>:input`` for a module's input)."""

    head: str | None
    gradcam: str
    single: str
    multi: tuple[str, ...]
    cascade: tuple[tuple[str, ...], ...]
    stages: tuple[tuple[str, ...], ...]  # trunk elements grouped by output shape, shallow to deep


@dataclass
class _Call:
    name: str
    module: nn.Module
    order: int = -1  # completion order of the (last) call
    calls: int = 0
    out: Tensor | None = None
    version: int = -1  # out._version when the module returned it
    first_input: Tensor | None = None


def _is_map(t: object, n: int) -> bool:
    return isinstance(t, Tensor) and t.ndim == 4 and t.shape[0] == n and t.shape[2] * t.shape[3] > 1


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _probe(model: nn.Module, size: int, channels: int, batch: int) -> tuple[dict[str, _Call], Tensor, int]:
    calls = {name: _Call(name, m) for name, m in model.named_modules() if name}
    counter = [0]
    handles = []

    def pre(call: _Call):
        def hook(_m, args):
            if call.first_input is None and args and isinstance(args[0], Tensor):
                call.first_input = args[0]
        return hook

    def post(call: _Call):
        def hook(_m, _args, out):
            call.calls += 1
            call.order = counter[0]
            counter[0] += 1
            if isinstance(out, Tensor):
                call.out, call.version = out, out._version
        return hook

    param = next(iter(model.parameters()), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    was_training = model.training
    try:
        for call in calls.values():
            handles.append(call.module.register_forward_pre_hook(pre(call)))
            handles.append(call.module.register_forward_hook(post(call)))
        model.eval()  # a batch of one 1 x 1 map would stop BatchNorm in train mode
        with torch.no_grad():
            logits = model(x)
    except (RuntimeError, ValueError, TypeError) as err:
        raise XiqaError(f"a probe forward of this {type(model).__name__} on a [{batch}, {channels}, {size}, "
                        f"{size}] batch failed ({type(err).__name__}: {err})") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise XiqaError(f"this {type(model).__name__} does not return logits [N, classes] "
                        f"(got {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))})")
    return calls, logits, x.shape[0]


def _children(calls: dict[str, _Call], name: str) -> Iterator[_Call]:
    """Direct children of ``name`` that ran, a child that never ran (ModuleList) replaced by its
    own children, in the order they finished."""
    prefix = f"{name}." if name else ""
    found: list[_Call] = []
    for c in calls.values():
        if not c.name.startswith(prefix) or "." in c.name[len(prefix):]:
            continue
        found.extend([c] if c.calls else _children(calls, c.name))
    return iter(sorted(found, key=lambda c: c.order))


def _shape(t: Tensor | None) -> tuple[int, ...]:
    return tuple(t.shape[1:]) if t is not None else ()


def derive(model: nn.Module, *, size: int = PROBE_SIZE, channels: int = 3, batch: int = 2,
           depth: int | None = None) -> Derived:
    """The layer presets and MPRT cascade of ``model`` (a CNN returning logits [N, K]) from one
    probe forward on a [``batch``, ``channels``, ``size``, ``size``] batch (see the module doc).

    ``depth`` (J) keeps the deepest ``depth`` layers of ``multi``, 1 to as many as were derived
    (``multi`` then still ends with ``single``); ``None`` keeps them all. The model's train/eval
    mode and parameters are left as they were. A model with no spatial feature map (a map larger
    than 1 × 1 at the probe size), or a ``depth`` out of range, is a :class:`XiqaError`."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise XiqaError(f"multi-layer depth {depth!r}: expected a whole number of layers, at least 1")
    calls, logits, n = _probe(model, size, channels, batch)
    ran = sorted((c for c in calls.values() if c.calls), key=lambda c: c.order)
    maps = [c for c in ran if _is_map(c.out, n)]
    if not maps:
        raise XiqaError(f"this {type(model).__name__} has no module returning a spatial feature map "
                        f"[N, C, h, w] (h·w > 1 at {size} px), so no layer can be read for Grad-CAM "
                        "or NormGrad")
    final = cast(Tensor, maps[-1].out)  # a map: not None
    fshape = _shape(final)

    linears = [c for c in ran if isinstance(c.module, nn.Linear) and c.out is not None
               and c.out.shape[-1] == logits.shape[-1]]
    head = linears[-1].name if linears else None

    def unchanged_by_parent(c: _Call) -> bool:
        parent = calls.get(_parent(c.name))
        return parent is None or parent.out is not final or parent.version == c.version

    holders = [c for c in ran if c.out is final and c.calls == 1 and unchanged_by_parent(c)]
    holders.sort(key=lambda c: c.name.count("."))

    def one_resolution(c: _Call) -> bool:
        return all(_shape(k.out)[1:] == fshape[1:] for k in _children(calls, c.name) if _is_map(k.out, n))

    cam = next((c.name for c in holders if one_resolution(c)), None)
    if cam is None:
        reader = next((c for c in ran if c.first_input is final and c.calls == 1), None)
        if reader is None:
            raise XiqaError(f"the last spatial feature map of this {type(model).__name__} {tuple(final.shape)} "
                            "is neither returned nor read by a module that runs once per forward")
        cam = single = f"{reader.name}:input"
    else:
        single = holders[-1].name

    stages = _stages(calls, final, logits, n)
    multi = [_stage_layer(calls, stage, n) for stage in stages]
    if multi and multi[-1] == single:
        multi.pop()
    multi.append(single)
    multi = list(dict.fromkeys(multi))
    if depth is not None:
        if depth > len(multi):
            raise XiqaError(f"multi-layer depth {depth}: this {type(model).__name__} has only {len(multi)} "
                            f"multi-layer NormGrad layers ({', '.join(multi)})")
        multi = multi[-depth:]

    last_order = max(c.order for c in maps if c.out is final)
    trunk_names = {e for stage in stages for e in stage}
    after = [c.name for c in _children(calls, "") if c.order > last_order and _has_params(c.module)
             and c.name not in trunk_names]
    steps: list[tuple[str, ...]] = ([tuple(after)] if after else []) + [tuple(s) for s in reversed(stages)]
    leftover = _uncovered(model, steps)
    if leftover:
        steps.append(leftover)
    return Derived(head, cam, single, tuple(multi), tuple(steps), tuple(tuple(s) for s in stages))


def _has_params(m: nn.Module) -> bool:
    return next(iter(m.parameters()), None) is not None


def _trunk(calls: dict[str, _Call], final: Tensor, logits: Tensor, n: int) -> str:
    """The innermost module (root: "") returning ``final`` or the logits whose children that ran
    span several resolutions."""
    best = ""
    for c in calls.values():
        if c.calls != 1 or not (c.out is final or c.out is logits):
            continue
        sizes = {_shape(k.out)[1:] for k in _children(calls, c.name) if _is_map(k.out, n)}
        if len(sizes) > 1 and c.name.count(".") >= best.count(".") and (best == "" or c.name.startswith(best)):
            best = c.name
    return best


def _stages(calls: dict[str, _Call], final: Tensor, logits: Tensor, n: int) -> list[list[str]]:
    trunk = _trunk(calls, final, logits, n)
    elements = [c for c in _children(calls, trunk) if _has_params(c.module) and _is_map(c.out, n)]
    stages: list[list[str]] = []
    shapes: list[tuple[int, ...]] = []
    for c in elements:
        if shapes and shapes[-1] == _shape(c.out):
            stages[-1].append(c.name)
        else:
            stages.append([c.name])
            shapes.append(_shape(c.out))
    return stages


def _stage_layer(calls: dict[str, _Call], stage: list[str], n: int) -> str:
    """The stage's first element, descended into while it is an ``nn.Sequential`` (to its first
    child returning the stage's output shape)."""
    c = calls[stage[0]]
    want = _shape(c.out)
    while isinstance(c.module, nn.Sequential):
        inner = next((k for k in _children(calls, c.name) if k.calls == 1 and _is_map(k.out, n)
                      and _shape(k.out) == want), None)
        if inner is None:
            break
        c = inner
    return c.name


def _uncovered(model: nn.Module, steps: list[tuple[str, ...]]) -> tuple[str, ...]:
    """Owners (module paths) of the parameters no step covers, shallow first."""
    covered = {id(p) for step in steps for name in step for p in model.get_submodule(name).parameters()}
    owners: list[str] = []
    for name, m in model.named_modules():
        if any(id(p) not in covered for p in m.parameters(recurse=False)):
            owners.append(name)
    return tuple(owners)


def check_cascade(model: nn.Module, steps: tuple[tuple[str, ...], ...]) -> None:
    """Raise a :class:`XiqaError` unless ``steps`` cover every parameter of ``model`` exactly once."""
    seen: dict[int, str] = {}
    for step in steps:
        for name in step:
            for pname, p in model.get_submodule(name).named_parameters():
                if id(p) in seen:
                    raise XiqaError(f"cascade: parameter {name}.{pname} is also in step {seen[id(p)]!r}")
                seen[id(p)] = name
    missing = [name for name, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise XiqaError(f"cascade: {len(missing)} parameter(s) in no step, e.g. {missing[0]}")
