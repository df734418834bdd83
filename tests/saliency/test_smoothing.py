"""Smoothing: torchvision's Gaussian (σ = 1, 11 × 11) with reflect padding, then renormalised.

Tolerances come from float32 and the operation chain, not a round number: ``smooth`` is a
121-tap convolution (torchvision uses the 2-D kernel, not two 1-D passes) followed by min-max
normalisation, checked against scipy in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from xiqa.saliency.methods import normalise
from xiqa.saliency.smoothing import smooth
from xiqa.schema import SMOOTH_KERNEL as KERNEL
from xiqa.schema import SMOOTH_SIGMA as SIGMA

EPS32 = torch.finfo(torch.float32).eps


def reference(maps: torch.Tensor, sigma: float = SIGMA, kernel: int = KERNEL, mode: str = "mirror") -> torch.Tensor:
    """float64 [N, H, W]: scipy's Gaussian, then min-max. scipy's "mirror" is torch's "reflect"
    (the edge pixel is not repeated); ``radius = kernel // 2`` gives ``kernel`` taps."""
    out = np.stack([ndimage.gaussian_filter(m.double().numpy(), sigma=sigma, mode=mode, radius=kernel // 2)
                    for m in maps])
    return normalise(torch.from_numpy(out))


def blur_tolerance(maps: torch.Tensor, expected_unnormalised_range: float) -> float:
    """Worst-case float32 error of ``smooth`` on ``maps``: a sum of 121 positive-weight terms is
    off by at most 121·ε·max|m| (and the float32 kernel weights by a few ε each); min-max
    normalisation subtracts two such values and divides by the blurred map's range."""
    taps = KERNEL * KERNEL
    blur_error = (taps + 4) * EPS32 * float(maps.abs().max())
    return 2 * blur_error / expected_unnormalised_range + 4 * EPS32


def random_maps() -> torch.Tensor:
    return torch.rand(2, 20, 17, generator=torch.Generator().manual_seed(0))


def impulses() -> torch.Tensor:
    """An impulse in the middle (its response is the kernel itself) and one next to the border
    (its response is the kernel plus its reflection)."""
    m = torch.zeros(2, 23, 23)
    m[0, 11, 11] = 1.0
    m[1, 1, 0] = 1.0
    return m


def check_random(got: torch.Tensor, maps: torch.Tensor, expected: torch.Tensor) -> None:
    ranges = [float(np.ptp(ndimage.gaussian_filter(m.double().numpy(), sigma=SIGMA, mode="mirror", radius=KERNEL // 2)))
              for m in maps]
    torch.testing.assert_close(got.double(), expected, atol=blur_tolerance(maps, min(ranges)), rtol=0)


def check_impulses(got: torch.Tensor, expected: torch.Tensor) -> None:
    # Away from the impulse every term of the convolution is an exact zero, so each output pixel
    # is one or two products of float32 kernel weights: a relative error, nothing absolute. A
    # weight is exp(-r²/2σ²) with r²/2σ² ≤ 12.5 computed in float32 (≈ 3ε relative), so a
    # weight is off by ≤ 12.5·3ε, a product of two by twice that, plus a few roundings. The
    # kernel's far tail (≈ 4e-6 of the peak at 5 px) is therefore checked too.
    exponent = (KERNEL // 2) ** 2 / (2 * SIGMA ** 2)
    torch.testing.assert_close(got.double(), expected, rtol=(2 * 3 * exponent + 8) * EPS32, atol=0)


def test_smoothing_is_an_11x11_sigma_1_gaussian_with_reflect_padding() -> None:
    maps = random_maps()
    got = smooth(maps)
    check_random(got, maps, reference(maps))
    assert got.dtype == torch.float32 and got.amin() == 0 and got.amax() == 1


def test_impulse_responses_are_the_kernel_and_its_reflection_to_a_few_ulps() -> None:
    m = impulses()
    got = smooth(m)
    check_impulses(got, reference(m))
    assert got[0, 11, 16] > 0 and got[0, 11, 17] == 0  # 11 taps: radius 5, nothing beyond


@pytest.mark.parametrize("broken", ["sigma 1.2", "kernel 9", "padding nearest", "padding zero"])
def test_the_checks_reject_a_wrong_sigma_kernel_or_padding(broken: str) -> None:
    """The tolerances above are tight enough: each wrong setting fails at least one check."""
    what, value = broken.split()
    maps, m = random_maps(), impulses()
    if what == "sigma":
        got_random, got_impulse = smooth(maps, sigma=float(value)), smooth(m, sigma=float(value))
        expected_random, expected_impulse = reference(maps), reference(m)
    elif what == "kernel":
        got_random, got_impulse = smooth(maps, kernel_size=int(value)), smooth(m, kernel_size=int(value))
        expected_random, expected_impulse = reference(maps), reference(m)
    else:  # the implementation is right, the reference uses another padding
        mode = {"nearest": "nearest", "zero": "constant"}[value]
        got_random, got_impulse = smooth(maps), smooth(m)
        expected_random, expected_impulse = reference(maps, mode=mode), reference(m, mode=mode)
    failures = 0
    for check, args in ((check_random, (got_random, maps, expected_random)),
                        (check_impulses, (got_impulse, expected_impulse))):
        try:
            check(*args)
        except AssertionError:
            failures += 1
    assert failures >= 1, broken


def test_reflect_padding_differs_from_zero_and_edge_padding_at_the_border() -> None:
    m = torch.zeros(1, 15, 15)
    m[0, 0, 3] = 1.0  # on the edge: "nearest" would repeat it outside, reflect does not
    m[0, 1, 10] = 1.0  # one row in: reflect mirrors it outside, zero padding does not
    got = smooth(m)[0].double().numpy()
    for mode in ("constant", "nearest"):
        other = ndimage.gaussian_filter(m[0].double().numpy(), sigma=1.0, mode=mode, radius=5)
        other = (other - other.min()) / (other.max() - other.min())
        assert np.abs(got - other).max() > 1e-3, mode


def test_constant_map_stays_constant_and_maps_keep_their_shape() -> None:
    maps = torch.stack([torch.full((12, 12), 0.25), torch.zeros(12, 12)])
    out = smooth(maps)
    assert out.shape == (2, 12, 12)
    assert (out == 0).all()
