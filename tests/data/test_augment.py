"""Batched augmentation (xiqa.data.transforms.augment) against torchvision's single-image ops."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from xiqa.data.transforms import AFFINE, FLIP_P, JITTER, augment, draw_augment_params

N_DRAWS = 4000
Z = 4.5  # a correct sampler fails a check at this many standard errors about once in 10^5 runs


def _images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """uint8 [n, 1, h, w]: smooth gradients plus noise and a bright square, so that a wrong
    direction of rotation, shift or flip changes many pixels."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = (xx * 3 + yy * 2).float()[None, None]
    noise = torch.randint(0, 60, (n, 1, h, w), generator=g).float()
    images = (base + noise).clamp(0, 200)
    images[:, :, h // 4:h // 4 + 6, w // 5:w // 5 + 5] = 250
    return images.to(torch.uint8)


def _torchvision_one(image: torch.Tensor, p, i: int) -> torch.Tensor:
    """Image ``i`` through torchvision v2's functional ops with the parameters drawn for it."""
    ops = [lambda t: TF.adjust_brightness(t, float(p.brightness[i])),
           lambda t: TF.adjust_contrast(t, float(p.contrast[i]))]
    for op in ops if bool(p.brightness_first[i]) else ops[::-1]:
        image = op(image)
    image = TF.affine(image, angle=float(p.angle[i]), scale=float(p.scale[i]), shear=[0.0, 0.0],
                      translate=[int(p.translate[i, 0]), int(p.translate[i, 1])],
                      interpolation=v2.InterpolationMode.NEAREST, fill=0)
    return TF.horizontal_flip(image) if bool(p.flip[i]) else image


@pytest.mark.parametrize("size", [(40, 48), (33, 33)])
def test_a_batch_equals_torchvision_image_by_image_with_the_same_parameters(size) -> None:
    h, w = size
    images = _images(24, h, w)
    p = draw_augment_params(24, h, w, torch.Generator().manual_seed(1))
    out = augment(images, params=p)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for i in range(len(images)):
        assert torch.equal(out[i], _torchvision_one(images[i], p, i)), f"image {i}"


def test_the_geometry_alone_matches_torchvision_affine_and_flip() -> None:
    # colour factors of exactly 1 leave the pixels alone, so only the geometry is compared
    images = _images(16, 36, 44, seed=3)
    p = draw_augment_params(16, 36, 44, torch.Generator().manual_seed(2))
    p = type(p)(**{**p.__dict__, "brightness": torch.ones(16, dtype=torch.float64),
                   "contrast": torch.ones(16, dtype=torch.float64)})
    out = augment(images, params=p)
    moved = 0
    for i in range(16):
        ref = TF.affine(images[i], angle=float(p.angle[i]), scale=float(p.scale[i]), shear=[0.0, 0.0],
                        translate=[int(p.translate[i, 0]), int(p.translate[i, 1])],
                        interpolation=v2.InterpolationMode.NEAREST, fill=0)
        ref = TF.horizontal_flip(ref) if bool(p.flip[i]) else ref
        assert torch.equal(out[i], ref), f"image {i}"
        moved += int(not torch.equal(out[i], images[i]))
    assert moved == 16


def test_the_same_generator_seed_gives_the_same_batch_and_each_image_its_own_draw() -> None:
    images = _images(8, 32, 32)
    a = augment(images, torch.Generator().manual_seed(5))
    b = augment(images, torch.Generator().manual_seed(5))
    c = augment(images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    p = draw_augment_params(8, 32, 32, torch.Generator().manual_seed(5))
    assert len(set(p.angle.tolist())) == 8 and len(set(p.brightness.tolist())) == 8


def test_drawn_parameters_follow_the_single_image_transforms_distributions() -> None:
    h, w = 40, 60
    p = draw_augment_params(N_DRAWS, h, w, torch.Generator().manual_seed(0))
    for values, lo, hi in ((p.brightness, 1 - JITTER["brightness"], 1 + JITTER["brightness"]),
                           (p.contrast, 1 - JITTER["contrast"], 1 + JITTER["contrast"]),
                           (p.angle, -AFFINE["degrees"], AFFINE["degrees"]),
                           (p.scale, *AFFINE["scale"])):
        assert lo <= float(values.min()) and float(values.max()) <= hi
        # Kolmogorov-Smirnov against U(lo, hi); alpha 1e-5
        assert stats.kstest(values.numpy(), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-5
    for flags, prob in ((p.flip, FLIP_P), (p.brightness_first, 0.5)):
        se = math.sqrt(prob * (1 - prob) / N_DRAWS)
        assert abs(float(flags.double().mean()) - prob) < Z * se
    # whole-pixel shifts: round(U(-m, m)) with m = translate * size, against torchvision's own
    # RandomAffine parameter draws (an independent sample of the same distribution)
    torch.manual_seed(0)
    reference = v2.RandomAffine(**AFFINE)
    ref = torch.tensor([reference.make_params([torch.zeros(1, h, w)])["translate"]
                        for _ in range(N_DRAWS)])
    for axis, size in ((0, w), (1, h)):
        m = AFFINE["translate"][axis] * size
        ours = p.translate[:, axis]
        assert int(ours.abs().max()) <= round(m)
        for value in range(-round(m), round(m) + 1):
            a = float((ours == value).double().mean())
            b = float((ref[:, axis] == value).double().mean())
            prob = (a + b) / 2
            assert abs(a - b) < Z * math.sqrt(2 * prob * (1 - prob) / N_DRAWS) + 1e-12, (axis, value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_the_same_parameters_and_gives_the_cpu_batch() -> None:
    images = _images(16, 48, 48)
    cpu = augment(images, torch.Generator().manual_seed(9))
    gpu = augment(images.cuda(), torch.Generator().manual_seed(9)).cpu()
    # same draws; float32 kernels may differ in the last bit, moving a nearest-neighbour sample
    # or a truncated grey level by one for a few pixels
    assert (cpu.int() - gpu.int()).abs().gt(1).double().mean() < 0.01
