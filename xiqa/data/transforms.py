"""From a decoded scan to the network's input, and the training augmentations (SPEC 3).

The pipeline is split at a uint8 cache point so that each image is decoded and resized once:

1. :func:`to_cached` — a 2-D scan in ``[0, 1]`` (:func:`xiqa.data.images.read_scan`, a fixed
   window per file, never per-image min-max) is resized to ``image_size × image_size`` (bilinear, antialiased;
   the aspect ratio is not kept, so boxes scale by ``image_size / width`` and
   ``image_size / height``), and quantised to uint8 ``[1, S, S]``.
2. :func:`augment` (training only) — colour jitter, affine and horizontal flip on those uint8
   tensors, per sample.
3. :func:`normalise` — uint8 ``[..., 1, S, S]`` → float32 ``[..., 3, S, S]``: grayscale copied
   to three channels, ImageNet mean/std.

:func:`preprocess` chains 1 and 3 for a single scan; evaluation and ``xiqa explain`` use it (or
:func:`xiqa.data.dataset.load_split`, which gives bit-identical inputs).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Augmentation strengths (the paper names the kinds, not the amounts): mild, so that the small
# object that causes the label stays inside the image.
JITTER = {"brightness": 0.2, "contrast": 0.2}
AFFINE = {"degrees": 10.0, "translate": (0.05, 0.05), "scale": (0.95, 1.05)}
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


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 1, S, S]`` → float32 ``[..., 3, S, S]`` with ImageNet mean/std."""
    if images.dtype != torch.uint8 or images.shape[-3] != 1:
        raise ValueError(f"expected uint8 [..., 1, S, S], got {images.dtype} {tuple(images.shape)}")
    x = images.float().div_(255.0)
    x = x.expand(*images.shape[:-3], 3, *images.shape[-2:])
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(shape)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(shape)
    return (x - mean) / std


def preprocess(gray: np.ndarray, image_size: int) -> torch.Tensor:
    """One scan → the network's float32 input ``[3, S, S]`` (no augmentation)."""
    return normalise(to_cached(gray, image_size))


def augmentation():
    """The training augmentation (torchvision v2) for one uint8 ``[1, S, S]`` image; its
    randomness comes from torch's global generator, so it is seeded by ``torch.manual_seed``."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.ColorJitter(**JITTER),
        v2.RandomAffine(**AFFINE),
        v2.RandomHorizontalFlip(FLIP_P),
    ])


def augment(images: torch.Tensor, transform=None) -> torch.Tensor:
    """Augment a uint8 batch ``[N, 1, S, S]`` sample by sample (v2 transforms draw one set of
    random parameters per call, so a whole-batch call would move every image alike)."""
    transform = transform or augmentation()
    return torch.stack([transform(img) for img in images])
