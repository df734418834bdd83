"""The three model conditions of the study (SPEC 3.1), each seeded and reproducible.

- ``trained``: the starting point of fine-tuning: the ImageNet backbone (``pretrained=True``) or
  the architecture's own initialisation drawn under ``torch.manual_seed(seed)``, plus a
  He-initialised head drawn from ``seed``;
- ``sr`` (semi-randomised): the ImageNet backbone, the head re-initialised (He) from ``seed``;
- ``fr`` (fully randomised): every parameter re-initialised from ``seed``: conv and linear
  weights He / Kaiming normal (fan-in, gain √2), biases 0, normalisation weights 1 and biases 0,
  BatchNorm running statistics reset (mean 0, variance 1); ConvNeXt's ``layer_scale`` 1e-6.

All draws come from a private ``torch.Generator``, so the result depends on ``seed`` only (the
paper's randomised models were unseeded).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from xiqa.models.zoo import head
from xiqa.schema import CONDITIONS

LAYER_SCALE_INIT = 1e-6  # torchvision.models.convnext's layer_scale default
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def _he_(module: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """Re-initialise one module's own parameters; returns the parameters it set."""
    done = []
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        # drawn on the CPU (where ``generator`` lives) and copied: the same weights on any device
        w = torch.empty(module.weight.shape, dtype=module.weight.dtype)
        module.weight.copy_(nn.init.kaiming_normal_(w, generator=generator))
        done.append(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
            done.append(module.bias)
    elif isinstance(module, _NORMS):
        if getattr(module, "weight", None) is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            done += [module.weight, module.bias]
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            module.reset_running_stats()
    layer_scale = module._parameters.get("layer_scale")
    if layer_scale is not None:  # ConvNeXt's per-channel residual scale: torchvision's own start value
        layer_scale.fill_(LAYER_SCALE_INIT)
        done.append(layer_scale)
    return done


@torch.no_grad()
def reinitialise(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every parameter of ``module`` and its submodules in place, as FR does (see
    module doc), drawing from ``generator`` (a CPU ``torch.Generator``) in ``module.modules()``
    order. A parameter of a kind it does not know raises ``TypeError`` instead of staying trained."""
    done: set[int] = set()
    for sub in module.modules():
        done.update(id(p) for p in _he_(sub, generator))
    left = [name for name, p in module.named_parameters() if id(p) not in done]
    if left:
        raise TypeError(f"no re-initialisation rule for parameter(s) {', '.join(left[:3])}")
    return module


def fully_randomise(model: nn.Module, seed: int) -> nn.Module:
    """FR: re-initialise every parameter of ``model`` in place from ``seed`` (see module doc).
    A parameter of a kind it does not know raises ``TypeError`` instead of staying trained."""
    return reinitialise(model, torch.Generator().manual_seed(seed))


@torch.no_grad()
def randomise_head(model: nn.Module, arch: str, seed: int) -> nn.Module:
    """He-initialise the head (final linear layer) of ``model`` in place from ``seed``."""
    _he_(head(model, arch), torch.Generator().manual_seed(seed))
    return model


@torch.no_grad()
def load_imagenet_backbone(model: nn.Module, arch: str, weights: str | Path | None = None) -> Path:
    """Copy the ImageNet weights of every layer but the head into ``model``; returns the file.
    Raises :class:`xiqa.models.weights.WeightsUnavailable` when there are none."""
    from xiqa.models.weights import imagenet_state_dict, resolve_imagenet_weights
    from xiqa.models.zoo import spec

    state = imagenet_state_dict(arch, weights)
    prefix = spec(arch).head + "."
    backbone = {k: v for k, v in state.items() if not k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    stray = [k for k in missing if not k.startswith(prefix)]
    if unexpected or stray:  # weights of another architecture, or a renamed layer
        from xiqa.errors import XiqaError

        raise XiqaError(f"{resolve_imagenet_weights(arch, weights)}: not {arch}'s ImageNet weights: "
                        f"{len(stray)} backbone parameter(s) missing (e.g. {stray[:3]}), "
                        f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    return resolve_imagenet_weights(arch, weights)


def initialise(model: nn.Module, arch: str, condition: str, seed: int, *, pretrained: bool = True,
               weights: str | Path | None = None) -> nn.Module:
    """Put a freshly built ``model`` into ``condition`` (trained / sr / fr) for ``seed``, in place.

    ``pretrained`` only matters for ``trained`` (``sr`` always needs ImageNet weights); ``weights``
    is an explicit ImageNet file or folder (else ``$XIQA_IMAGENET_WEIGHTS`` / torchvision's cache).
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {', '.join(CONDITIONS)}")
    if condition == "fr":
        return fully_randomise(model, seed)
    if condition == "sr" or pretrained:
        load_imagenet_backbone(model, arch, weights)
    return randomise_head(model, arch, seed)
