"""From a decoded scan to the network's input, and the training augmentations (SPEC 3).

The pipeline is split at a uint8 cache point so that each image is decoded and resized once:

1. :func:`to_cached` — a 2-D scan in ``[0, 1]`` (:func:`xiqa.data.images.read_scan`, a fixed
   window per file, never per-image min-max) is resized to ``image_size × image_size`` (bilinear, antialiased;
   the aspect ratio is not kept, so boxes scale by ``image_size / width`` and
   ``image_size / height``), and quantised to uint8 ``[1, S, S]``.
2. :func:`augment` (training only) — colour jitter, affine and horizontal flip on a uint8 batch
   on the model's device, each image with its own random parameters drawn for the whole batch at
   once (:func:`draw_augment_params`); :func:`augmentation` is the same thing for one image in
   torchvision v2, the definition it is tested against.
3. :func:`standardise` — uint8 ``[..., 1, S, S]`` → float32 ``[..., 3, S, S]``: grayscale copied
   to three channels, ImageNet mean/std.

:func:`preprocess` chains 1 and 3 for a single scan (``xiqa explain``);
:func:`xiqa.data.dataset.load_split` gives evaluation bit-identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Augmentation strengths (the paper names the kinds, not the amounts): mild, so that the small
# object that causes the label stays inside the image.
JITTER = {"brightness": 0.2, "contrast": 0.2}
DEGREES: float = 10.0
TRANSLATE: tuple[float, float] = (0.05, 0.05)  # fractions of width, height
SCALE: tuple[float, float] = (0.95, 1.05)
AFFINE = {"degrees": DEGREES, "translate": TRANSLATE, "scale": SCALE}
FLIP_P = 0.5


def to_cached(gray: np.ndarray, image_size: int) -> torch.Tensor:
    """Resize and quantise one 2-D scan in ``[0, 1]`` (values outside are clipped): uint8
    ``[1, S, S]``."""
    arr = np.asarray(gray, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale array, got shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)
    return (x[0] * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def standardise(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 1, S, S]`` → float32 ``[..., 3, S, S]`` with ImageNet mean/std."""
    if images.dtype != torch.uint8 or images.shape[-3] != 1:
        raise ValueError(f"expected uint8 [..., 1, S, S], got {images.dtype} {tuple(images.shape)}")
    x = images.float().div_(255.0)
    x = x.expand(*images.shape[:-3], 3, *images.shape[-2:])
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(shape)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(shape)
    return (x - mean) / std


def preprocess(gray: np.ndarray, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One scan → ``(cached, input)``: the uint8 ``[1, S, S]`` image (what a figure shows) and
    the network's float32 input ``[3, S, S]`` (no augmentation)."""
    cached = to_cached(gray, image_size)
    return cached, standardise(cached)


def augmentation():
    """The training augmentation (torchvision v2) for one uint8 ``[1, S, S]`` image: the
    single-image definition that :func:`augment` applies to whole batches (and that its tests
    compare against)."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.ColorJitter(**JITTER),
        v2.RandomAffine(**AFFINE),
        v2.RandomHorizontalFlip(FLIP_P),
    ])


@dataclass(frozen=True)
class AugmentParams:
    """The random parameters of one augmented batch, one entry per image (CPU tensors ``[B]``),
    drawn from the distributions of :func:`augmentation`'s transforms.

    - ``brightness``, ``contrast``: float64 factors, uniform in ``1 ± JITTER[...]``
    - ``brightness_first``: bool, the order of the two colour operations (ColorJitter draws a
      random order per image)
    - ``angle``: float64 degrees, uniform in ``± AFFINE["degrees"]``
    - ``translate``: int64 ``[B, 2]`` whole pixels ``(x, y)``, ``round(U(± translate·size))``
    - ``scale``: float64, uniform in ``AFFINE["scale"]``
    - ``flip``: bool, horizontal flip with probability ``FLIP_P``
    """

    brightness: torch.Tensor
    contrast: torch.Tensor
    brightness_first: torch.Tensor
    angle: torch.Tensor
    translate: torch.Tensor
    scale: torch.Tensor
    flip: torch.Tensor


def draw_augment_params(n: int, height: int, width: int,
                        generator: torch.Generator | None = None) -> AugmentParams:
    """Draw :class:`AugmentParams` for ``n`` images of ``height × width`` pixels in one go from
    ``generator`` (a CPU generator; ``None``: torch's global one), whatever the images' device,
    so that a seed gives the same augmentation on CPU and CUDA."""

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.empty(n, *shape, dtype=torch.float64).uniform_(lo, hi, generator=generator)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, dtype=torch.float64, generator=generator) < p

    b, c = JITTER["brightness"], JITTER["contrast"]
    max_shift = torch.tensor([TRANSLATE[0] * width, TRANSLATE[1] * height], dtype=torch.float64)
    return AugmentParams(
        brightness=uniform(max(0.0, 1 - b), 1 + b), contrast=uniform(max(0.0, 1 - c), 1 + c),
        brightness_first=coin(0.5), angle=uniform(-DEGREES, DEGREES),
        translate=((uniform(-1.0, 1.0, 2) * max_shift).round()).to(torch.int64),
        scale=uniform(*SCALE), flip=coin(FLIP_P))


def affine_theta(params: AugmentParams) -> torch.Tensor:
    """float64 ``[B, 2, 3]``: per image, the inverse affine map from output to input pixel
    coordinates relative to the image centre, as torchvision's ``affine`` builds it (no shear)."""
    rot = torch.deg2rad(params.angle)
    cos, sin = torch.cos(rot) / params.scale, torch.sin(rot) / params.scale
    tx, ty = params.translate[:, 0].double(), params.translate[:, 1].double()
    return torch.stack([torch.stack([cos, sin, -cos * tx - sin * ty], -1),
                        torch.stack([-sin, cos, sin * tx - cos * ty], -1)], 1)


def augment(images: torch.Tensor, generator: torch.Generator | None = None,
            params: AugmentParams | None = None) -> torch.Tensor:
    """Augment a uint8 batch ``[B, 1, H, W]`` on its own device, each image with its own
    parameters (``params``, else drawn from ``generator``, see :func:`draw_augment_params`).

    The same operations as :func:`augmentation` image by image (ColorJitter, then RandomAffine
    with nearest-neighbour sampling and zero fill, then RandomHorizontalFlip) with uint8
    rounding between them as torchvision does, in a handful of batched tensor operations.
    Returns uint8 ``[B, 1, H, W]``.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected uint8 [B, 1, H, W], got {images.dtype} {tuple(images.shape)}")
    n, _, h, w = images.shape
    p = params or draw_augment_params(n, h, w, generator)
    dev = images.device
    per_image = (-1, 1, 1, 1)
    x = images.float()
    # torchvision blends in float32 with the factor and its complement cast from float64
    bf = p.brightness.to(dev, torch.float32).view(per_image)
    cf = p.contrast.to(dev, torch.float32).view(per_image)
    c_rest = (1.0 - p.contrast).to(dev, torch.float32).view(per_image)

    def brightness(t: torch.Tensor) -> torch.Tensor:
        return t.mul(bf).clamp_(0, 255).trunc_()  # the cast back to uint8 truncates

    def contrast(t: torch.Tensor) -> torch.Tensor:
        mean = t.mean(dim=(-3, -2, -1), keepdim=True)
        return t.mul(cf).add_(mean * c_rest).clamp_(0, 255).trunc_()

    first = p.brightness_first.to(dev).view(per_image)
    x = torch.where(first, contrast(brightness(x)), brightness(contrast(x)))
    theta = affine_theta(p).to(dev, torch.float32)
    x = F.grid_sample(x, _affine_grid(theta, h, w), mode="nearest", padding_mode="zeros",
                      align_corners=False)
    x = torch.where(p.flip.to(dev).view(per_image), x.flip(-1), x)
    return x.round_().to(torch.uint8)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """float32 ``[B, H, W, 2]`` sampling grid of ``theta`` [B, 2, 3] (pixel units, centre
    origin), normalised for ``grid_sample(align_corners=False)`` as torchvision's ``_affine_grid``."""
    dev = theta.device
    base = torch.empty(1, h, w, 3, dtype=theta.dtype, device=dev)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=dev))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=dev).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div(torch.tensor([0.5 * w, 0.5 * h], dtype=theta.dtype, device=dev))
    return base.view(1, h * w, 3).expand(len(theta), -1, -1).bmm(scaled).view(-1, h, w, 2)
