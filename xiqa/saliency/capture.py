"""One forward, one plain backward, one guided backward: everything the saliency methods read.

:func:`capture` runs the model once with forward hooks that keep the output (or, for a name
ending in ``:input``, the first input) of every requested layer. From that one graph it takes

1. a plain backward, ``torch.autograd.grad(score, [x, *activations], retain_graph=True)``: the
   input gradient and every layer gradient at once (no parameter gradient is computed);
2. a guided backward of the same score on the same graph: the Guided Backprop input gradient.

The score is ``sum_n logits[n, target[n]]``. Images do not interact in an eval-mode network, so
the gradient of the sum with respect to image ``n`` is the gradient of its own target logit:
batch results equal per-image results.

Plain and guided gradients share the forward through *gates*: every rectifier-like activation
module gets a forward hook that routes its output through an identity autograd function. Its
backward reads a shared mode flag. In plain mode it hands the incoming gradient, untouched, to
the activation's own backward, so the plain pass is bit-for-bit the model's ordinary gradient.
In guided mode it applies the guided rule

    grad_in = max(grad_out, 0) * max(f'(x), 0)

which for ReLU (f' = 1[x > 0]) is Springenberg et al.'s rule (a positive gradient passes only
through a positive input), and for SiLU / Swish, f'(x) = s(x)(1 + x(1 - s(x))) with s the logistic
sigmoid, keeps only positive gradients through the positive part of the local slope (SiLU's slope
is negative below x ≈ -1.28). Sigmoid gates of squeeze-excitation blocks are left plain, as
Captum leaves every non-ReLU module plain. A model with an activation module that has no guided
rule (GELU, Hardswish, LeakyReLU, ...) or with none at all is refused rather than silently
explained with the plain gradient.

The model is left as it was: an ``ExitStack`` removes the hooks (also when the forward raises),
``inplace`` flags, which are switched off during the capture so that a hooked tensor is never
overwritten by the next activation, are restored, and no parameter's ``.grad`` or
``requires_grad`` is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from xiqa.errors import XiqaError
from xiqa.models.zoo import check_layers, get_module


class _Mode:
    """Shared switch read by every gate's backward: plain or guided."""

    guided: bool = False


class _ReluGate(torch.autograd.Function):
    """Identity on the ReLU's output. Guided: clamp the gradient at 0; ReLU's own backward then
    masks it with 1[x > 0] (x > 0 exactly where the output is > 0)."""

    @staticmethod
    def forward(ctx, out: Tensor, mode: _Mode) -> Tensor:
        ctx.mode = mode
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (grad.clamp(min=0) if ctx.mode.guided else grad), None


class _SiluGate(torch.autograd.Function):
    """Identity on the SiLU's output. Plain: the gradient goes on to SiLU's own backward.
    Guided: ``max(g, 0) * max(silu'(x), 0)`` goes straight to the SiLU's input."""

    @staticmethod
    def forward(ctx, inp: Tensor, out: Tensor, mode: _Mode) -> Tensor:
        ctx.mode = mode
        ctx.save_for_backward(inp)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if not ctx.mode.guided:
            return None, grad, None
        (x,) = ctx.saved_tensors
        # max(g, 0) · max(f'(x), 0) = max(max(g, 0) · f'(x), 0): one fused SiLU backward kernel
        return torch.ops.aten.silu_backward(grad.clamp(min=0), x).clamp_(min=0), None, None


_Kinds = tuple[type[nn.Module], ...]


def _activation_kinds() -> tuple[_Kinds, _Kinds, _Kinds]:
    """(ReLU-like, SiLU-like, without a guided rule) activation module types."""
    silu: _Kinds = (nn.SiLU,)
    try:
        from efficientnet_pytorch.utils import MemoryEfficientSwish, Swish

        silu += (MemoryEfficientSwish, Swish)
    except ImportError:  # pragma: no cover - the package is a dependency
        pass
    unsupported = (nn.GELU, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish,
                   nn.Hardswish, nn.Hardtanh, nn.Softplus)  # Hardtanh covers ReLU6
    return (nn.ReLU,), silu, unsupported


def guided_refusal(model: nn.Module) -> str | None:
    """Why Guided Backprop cannot run on ``model`` (one sentence), or None when it can: it needs
    ReLU or SiLU/Swish activation modules, and none without a guided rule."""
    relu_types, silu_types, unsupported = _activation_kinds()
    for name, m in model.named_modules():
        if isinstance(m, unsupported):
            return (f"guided backprop has no rule for {type(m).__name__} at {name!r}; only ReLU and "
                    "SiLU/Swish activations are supported")
    if not any(isinstance(m, relu_types + silu_types) for m in model.modules()):
        return (f"guided backprop found no ReLU or SiLU module in {type(model).__name__}; "
                "it would silently be the plain gradient")
    return None


@dataclass
class Captured:
    """What one :func:`capture` took from the model; every tensor is detached.

    ``inputs`` [N, 3, H, W] as given; ``logits`` [N, K]; ``target`` long [N];
    ``input_grad`` / ``guided_input_grad`` [N, 3, H, W] (None when not asked for);
    ``activations[name]`` / ``gradients[name]`` [N, C, h, w] for every requested layer.
    """

    inputs: Tensor
    logits: Tensor
    target: Tensor
    input_grad: Tensor | None = None
    guided_input_grad: Tensor | None = None
    activations: dict[str, Tensor] = field(default_factory=dict)
    gradients: dict[str, Tensor] = field(default_factory=dict)


def _check_target(target: Tensor | None, logits: Tensor) -> Tensor:
    n, k = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    target = torch.as_tensor(target, device=logits.device)
    if target.shape != (n,) or target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise XiqaError(f"target must be an integer tensor of shape [{n}], got {target.dtype} {tuple(target.shape)}")
    if n and (int(target.min()) < 0 or int(target.max()) >= k):
        raise XiqaError(f"target classes must lie in [0, {k - 1}], got {target.tolist()}")
    return target.long()


def _restore_inplace(flags: list[tuple[Any, bool]]) -> None:
    for mod, flag in flags:
        mod.inplace = flag


def capture(model: nn.Module, images: Tensor, layers: Sequence[str] = (), *,
            target: Tensor | None = None, input_grad: bool = False, guided: bool = False) -> Captured:
    """Run ``model`` once on ``images`` [N, 3, H, W] and take activations, gradients and input
    gradients of ``sum_n logits[n, target[n]]`` (``target=None``: each image's predicted class).

    ``layers``: names as in :mod:`xiqa.models.zoo` (``layer4.2``, ``_avg_pooling:input``); each
    must run exactly once per forward. ``input_grad``: also the plain input gradient.
    ``guided``: also the Guided Backprop input gradient (second backward on the same graph).
    The model's train/eval mode is not changed; explain an eval-mode model.
    """
    if images.ndim != 4:
        raise XiqaError(f"images must be a batch [N, C, H, W], got shape {tuple(images.shape)}")
    layers = list(dict.fromkeys(layers))
    check_layers(model, layers)
    relu_types, silu_types, unsupported = _activation_kinds()
    mode = _Mode()
    acts: dict[str, Tensor] = {}
    calls: dict[str, int] = dict.fromkeys(layers, 0)
    gates = [0]
    # nn.Module types its attributes as Tensor | Module; ``inplace`` is a plain bool
    switchable: list[Any] = [m for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)]
    inplace_flags = [(mod, bool(mod.inplace)) for mod in switchable]

    def relu_hook(_module, _args, out):
        gates[0] += 1
        return _ReluGate.apply(out, mode)

    def silu_hook(_module, args, out):
        gates[0] += 1
        return _SiluGate.apply(args[0], out, mode)

    def keeper(name: str, on_input: bool):
        def keep(_module, args, out=None):
            calls[name] += 1
            acts[name] = args[0] if on_input else out
            # the network goes on with a copy, so that an in-place function after the module
            # (DenseNet's F.relu(features, inplace=True)) cannot overwrite the kept tensor
            return None if on_input else out.clone()
        return keep

    with contextlib.ExitStack() as undo:  # unwinds in reverse: hooks off, then flags back
        undo.callback(_restore_inplace, inplace_flags)
        for mod, _ in inplace_flags:
            mod.inplace = False  # a kept tensor must not be overwritten by the next in-place op
        if guided:
            for m in model.modules():
                if isinstance(m, unsupported):
                    raise XiqaError(guided_refusal(model) or "")
                if isinstance(m, relu_types):
                    undo.callback(m.register_forward_hook(relu_hook).remove)
                elif isinstance(m, silu_types):
                    undo.callback(m.register_forward_hook(silu_hook).remove)
        # Keepers go after the gates so that a kept output is the gated tensor the rest of the
        # network actually reads.
        for name in layers:
            module = get_module(model, name)
            on_input = name.endswith(":input")
            hook = keeper(name, on_input)
            handle = module.register_forward_pre_hook(hook) if on_input else module.register_forward_hook(hook)
            undo.callback(handle.remove)

        with torch.enable_grad():
            x = images.detach().requires_grad_(True)
            logits = model(x)
            if logits.ndim != 2:
                raise XiqaError(f"the model must return logits [N, classes], got shape {tuple(logits.shape)}")
            for name, n in calls.items():
                if n != 1:
                    raise XiqaError(f"layer {name!r} ran {n} times in one forward; name a module "
                                    "that runs exactly once (efficientnet-pytorch's _swish runs twice)")
            if guided and gates[0] == 0:
                raise XiqaError(f"guided backprop found no ReLU or SiLU module in {type(model).__name__}; "
                                "it would silently be the plain gradient")
            tgt = _check_target(target, logits.detach())
            score = logits.gather(1, tgt[:, None]).sum()
            out = Captured(inputs=images, logits=logits.detach(), target=tgt)

            wanted = ([x] if input_grad else []) + [acts[name] for name in layers]
            if wanted:
                grads = torch.autograd.grad(score, wanted, retain_graph=guided, allow_unused=True)
                if input_grad:
                    out.input_grad, grads = grads[0], grads[1:]
                for name, g in zip(layers, grads, strict=True):
                    if g is None:
                        raise XiqaError(f"layer {name!r} does not lead to the model's logits")
                    out.activations[name] = acts[name].detach()
                    out.gradients[name] = g
            if guided:
                mode.guided = True
                (out.guided_input_grad,) = torch.autograd.grad(score, [x])
        return out
