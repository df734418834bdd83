"""Saliency maps for the study's ten methods from one forward and two backward passes.

>>> maps = explain(model.eval(), images, arch="resnet34")          # all ten methods
>>> maps["normgrad_conv3x3_multi"].shape                            # [N, H, W], float32 in [0, 1]

:func:`explain` asks :func:`~xiqa.saliency.capture.capture` for exactly the tensors the requested
methods need (layer activations and gradients, the input gradient, the guided input gradient) and
reduces them with the pure functions of :mod:`xiqa.saliency.methods`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from xiqa.errors import XiqaError
from xiqa.models import zoo
from xiqa.saliency import methods as M
from xiqa.saliency.capture import Captured, capture, guided_refusal
from xiqa.saliency.smoothing import smooth
from xiqa.saliency.smoothing import smooth as smooth_maps  # `smooth` is also explain's flag
from xiqa.schema import METHODS, SMOOTH_KERNEL, SMOOTH_SIGMA

VIL_NAMES = tuple(M.VILS)
GUIDED_METHODS = ("guided_backprop", "guided_gradcam")
CAM_METHODS = ("gradcam", "guided_gradcam")

__all__ = ["METHODS", "Captured", "applicable", "capture", "explain", "smooth"]


def check_methods(methods: Sequence[str] | None) -> tuple[str, ...]:
    """The requested method names in order (``None``: all ten); an unknown name is a XiqaError."""
    if methods is None:
        return METHODS
    if isinstance(methods, str):
        methods = [methods]
    for name in methods:
        if name not in METHODS:
            raise XiqaError(f"unknown saliency method {name!r}; choose from {', '.join(METHODS)}")
    if not methods:
        raise XiqaError("no saliency method requested")
    return tuple(dict.fromkeys(methods))


def applicable(model: nn.Module, methods: Sequence[str] | None = None) -> tuple[tuple[str, ...], dict[str, str]]:
    """``(methods that can run on model, {method that cannot: why, one sentence})``, in order.

    Only the guided methods can be refused (Guided Backprop needs ReLU-family activations: GELU,
    Hardswish, ... have no guided rule); the others run on every CNN with a spatial feature map."""
    methods = check_methods(methods)
    refusal = guided_refusal(model) if set(methods) & set(GUIDED_METHODS) else None
    if refusal is None:
        return methods, {}
    refused = {m: f"{m} is not applicable: {refusal}" for m in methods if m in GUIDED_METHODS}
    return tuple(m for m in methods if m not in refused), refused


def explain(model: nn.Module, images: Tensor, methods: Sequence[str] | None = None, *, arch: str,
            target: Tensor | None = None, layers: Mapping[str, Sequence[str]] | None = None,
            smooth: bool = False, smooth_sigma: float = SMOOTH_SIGMA, smooth_kernel: int = SMOOTH_KERNEL,
            info: dict | None = None) -> dict[str, Tensor]:
    """Saliency maps of ``images`` for ``methods`` (default all of :data:`METHODS`).

    Args:
        model: an ``arch`` classifier returning logits [N, K]; put it in eval mode first (in train
            mode BatchNorm mixes the images of a batch). It is left exactly as it was.
        images: normalised float batch [N, 3, H, W] on the model's device.
        methods: names of :data:`METHODS`; ``None``: all ten.
        arch: an architecture name: one of :data:`xiqa.schema.ARCHS` (presets in
            :data:`xiqa.models.zoo.ARCH_SPECS`) or any CNN the zoo derives presets for.
        target: long [N], the class each image is explained for; ``None``: its predicted class.
        layers: overrides of the presets, ``{"gradcam": [..], "single": [..], "multi": [..]}``
            (any subset of keys, e.g. ``EvaluateParams.layers[arch]``).
        smooth: blur each final map with a ``smooth_kernel``² Gaussian of σ ``smooth_sigma``
            (reflect padding) and normalise again.
        smooth_sigma: the Gaussian's σ in input pixels (default: the paper's, as in params).
        smooth_kernel: the kernel's side in input pixels (default: the paper's, as in params).
        info: if given, filled with ``logits`` [N, K], ``target`` [N] and, per multi-layer NormGrad
            method, ``skipped_layers/<method>`` long [N] (layers skipped as constant).

    Returns:
        ``{method: float32 [N, H, W]}`` in [0, 1] at input resolution, min-max normalised per
        image; a constant map is all 0 (see :func:`xiqa.saliency.methods.constant_maps`).
    """
    methods = check_methods(methods)
    preset = zoo.layers(arch, layers)
    wanted = set(methods)
    single_vils = [v for v in VIL_NAMES if f"normgrad_{v}_single" in wanted]
    multi_vils = [v for v in VIL_NAMES if f"normgrad_{v}_multi" in wanted]
    cam_layer = preset["gradcam"][0] if wanted & set(CAM_METHODS) else None
    single_layer = preset["single"][0] if single_vils else None
    multi_layers = list(preset["multi"]) if multi_vils else []
    needed = [n for n in (cam_layer, single_layer, *multi_layers) if n is not None]

    cap = capture(model, images, needed, target=target, input_grad="input_x_gradient" in wanted,
                  guided=bool(wanted & set(GUIDED_METHODS)))
    size = tuple(images.shape[-2:])
    n = images.shape[0]
    out: dict[str, Tensor] = {}

    if cam_layer is not None:
        cam_up = M.upsample(M.gradcam(cap.activations[cam_layer], cap.gradients[cam_layer]), size)
        if "gradcam" in wanted:
            out["gradcam"] = M.normalise(cam_up)
    if cap.guided_input_grad is not None:
        guided = M.guided_backprop(cap.guided_input_grad)
        if "guided_backprop" in wanted:
            out["guided_backprop"] = M.normalise(guided)
        if "guided_gradcam" in wanted:
            out["guided_gradcam"] = M.normalise(M.guided_gradcam(guided, cam_up))
    if cap.input_grad is not None:
        out["input_x_gradient"] = M.normalise(M.input_x_gradient(cap.inputs, cap.input_grad))

    def layer_maps(name: str, vils: list[str]) -> dict[str, Tensor]:
        """Per-VIL maps of one layer, upsampled and normalised: {vil: [N, H, W]}."""
        stack = M.upsample(M.normgrad_layer(cap.activations[name], cap.gradients[name], vils), size)
        stack = M.normalise(stack.reshape(n * len(vils), *size)).view(n, len(vils), *size)
        return {v: stack[:, i] for i, v in enumerate(vils)}

    single: dict[str, Tensor] = {}

    def multi_stream() -> Iterator[Tensor]:
        for name in multi_layers:
            vils = list(dict.fromkeys(multi_vils + (single_vils if name == single_layer else [])))
            maps = layer_maps(name, vils)
            if name == single_layer:
                single.update(maps)
            # all multi VILs go through the product together, as a batch of n * V maps
            yield torch.stack([maps[v] for v in multi_vils], dim=1).reshape(n * len(multi_vils), *size)

    if multi_vils:
        product, skipped = M.combine_layers(multi_stream())
        product = product.view(n, len(multi_vils), *size)
        skipped = skipped.view(n, len(multi_vils))
        for i, v in enumerate(multi_vils):
            out[f"normgrad_{v}_multi"] = product[:, i]
            if info is not None:
                info[f"skipped_layers/normgrad_{v}_multi"] = skipped[:, i]
    if single_layer is not None:  # some single-layer VIL was asked for
        if not single:
            single = layer_maps(single_layer, single_vils)
        for v in single_vils:
            out[f"normgrad_{v}_single"] = single[v]

    if info is not None:
        info["logits"] = cap.logits
        info["target"] = cap.target
    result = {}
    for name in methods:
        m = out[name].float()
        if smooth:
            m = smooth_maps(m, smooth_sigma, smooth_kernel)
        result[name] = m.contiguous()
    return result
