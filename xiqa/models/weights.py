"""ImageNet weights, resolved locally (SPEC 3): nothing is ever downloaded.

Where :func:`imagenet_state_dict` looks, first hit wins:

1. ``path`` — the caller's explicit file or folder (``randomise.imagenet_weights`` in
   ``params.yaml``), because a tracked parameter should beat the environment;
2. ``$XIQA_IMAGENET_WEIGHTS`` — a file, or a folder holding the file;
3. torchvision's cache, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME``), where
   ``torchvision.models.<arch>(weights=...)`` and efficientnet-pytorch leave their downloads.

In a folder the file is found by its official name (:data:`IMAGENET_FILES`, e.g.
``resnet34-b627a593.pth``) or as ``<arch>.pth`` / ``<arch>.pt``. Files load with
``torch.load(..., weights_only=True)`` and are checked against the architecture's layers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xiqa.errors import XiqaError

if TYPE_CHECKING:
    import torch

WEIGHTS_ENV = "XIQA_IMAGENET_WEIGHTS"

# Official file names of the ImageNet-1k weights, preferred first (resnet50: V1 is the weights of
# the paper's era; V2 is torchvision's newer default).
IMAGENET_FILES: dict[str, tuple[str, ...]] = {
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
    "efficientnet_b0": ("efficientnet_b0_rwightman-7f5810bc.pth",),
    "efficientnet-b0": ("efficientnet-b0-355c32eb.pth",),
}


class WeightsUnavailable(XiqaError):
    """No ImageNet weights for an architecture anywhere xiqa looks (not a broken file)."""


def hub_dir() -> Path:
    """``torch.hub.get_dir()`` by torch's own rules ($TORCH_HOME/hub, else
    $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub) without importing torch: the ``sr``
    stages that find no weights then skip in about a second instead of three. A test checks
    it against torch; an explicit ``torch.hub.set_dir`` in this process is honoured when
    torch is already imported."""
    import sys

    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def _candidates(arch: str) -> tuple[str, ...]:
    return (*IMAGENET_FILES.get(arch, ()), f"{arch}.pth", f"{arch}.pt")


def _in_folder(folder: Path, arch: str) -> Path | None:
    for name in _candidates(arch):
        if (folder / name).is_file():
            return folder / name
    return None


def how_to_supply(arch: str) -> str:
    """The one sentence telling a user how to make ImageNet weights for ``arch`` available."""
    name = IMAGENET_FILES.get(arch, (f"{arch}.pth",))[0]
    return (f"no ImageNet weights for {arch} are available offline: put {name} in "
            f"{hub_dir() / 'checkpoints'}, point ${WEIGHTS_ENV} or "
            f"randomise.imagenet_weights in params.yaml at that file or its folder, "
            f"or set pretrained: false")


def resolve_imagenet_weights(arch: str, path: str | Path | None = None) -> Path:
    """The weights file for ``arch``; :class:`WeightsUnavailable` when there is none, and a
    plain :class:`XiqaError` when an explicitly given path does not exist."""
    for given, where in ((path, "randomise.imagenet_weights"),
                         (os.environ.get(WEIGHTS_ENV) or None, f"${WEIGHTS_ENV}")):
        if not given:
            continue
        given = Path(given).expanduser()
        if given.is_file():
            return given
        if given.is_dir():
            found = _in_folder(given, arch)
            if found is not None:
                return found
            continue  # a folder for other architectures: keep looking
        raise XiqaError(f"{given}: ImageNet weights path given by {where} does not exist")
    found = _in_folder(hub_dir() / "checkpoints", arch)
    if found is None:
        raise WeightsUnavailable(how_to_supply(arch))
    return found


def imagenet_state_dict(arch: str, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of ``arch`` (1000-way head included), checked against the
    architecture's parameter names and shapes (all but the head's, which the caller drops); see
    the module docstring for where it looks. A stand-in start (:func:`resolve_start`) is read
    by the same function from its explicit path."""
    import torch

    from xiqa.models.zoo import constructor, spec

    spec(arch)
    file = resolve_imagenet_weights(arch, path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise XiqaError(f"{file}: cannot load ImageNet weights ({type(err).__name__}: {err})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise XiqaError(f"{file}: not a state dict of tensors")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in constructor(arch)().state_dict().items()}
    missing = sorted(set(expected) - set(state))
    # the head is dropped at load time, so its shape may differ (a stand-in's pretext head)
    head = spec(arch).head + "."
    bad = sorted(k for k in expected.keys() & state.keys()
                 if tuple(state[k].shape) != expected[k] and not k.startswith(head))
    if missing or bad:
        what = (f"missing {missing[0]}" if missing else
                f"{bad[0]} has shape {tuple(state[bad[0]].shape)}, expected {expected[bad[0]]}")
        raise XiqaError(f"{file}: not ImageNet weights of {arch} ({what})")
    return {k: state[k] for k in expected}


@dataclass(frozen=True)
class Start:
    """Where a fine-tuned or SR backbone comes from (SPEC 3): ``label`` is ``imagenet`` or
    ``stand-in:<pretrain run id>``, ``path`` the state dict file that
    :func:`imagenet_state_dict` reads."""

    label: str
    path: Path


def resolve_start(root: Path, arch: str, imagenet: str | Path | None = None) -> Start:
    """The backbone start of ``arch``: real ImageNet weights when any are found (they always
    win; see the module docstring), else the `pretrain` stage's stand-in
    (``models/pretrain/<arch>/``), else :class:`WeightsUnavailable` saying how to get either."""
    import json

    from xiqa.paths import pretrain_dir

    try:
        return Start("imagenet", resolve_imagenet_weights(arch, imagenet))
    except WeightsUnavailable as err:
        folder = pretrain_dir(Path(root), arch)
        pointer = folder / "start.json"
        try:
            start = json.loads(pointer.read_text())
        except FileNotFoundError:
            raise WeightsUnavailable(f"{err}, or run the pretrain stage for a stand-in start "
                                     f"(`dvc repro pretrain@{arch}`)") from None
        except ValueError:
            raise XiqaError(f"{pointer}: not valid JSON (rerun `dvc repro -f pretrain@{arch}`)") from None
        if start.get("start", "").startswith("stand-in:") and (folder / start.get("weights", "")).is_file():
            return Start(start["start"], folder / start["weights"])
        raise WeightsUnavailable(f"{err}; {pointer} names no stand-in start "
                                 f"({start.get('reason') or start.get('start')})") from None
