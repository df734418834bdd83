"""Smoothing: torchvision's Gaussian (σ = 1, 11 × 11) with reflect padding, then renormalised."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from xiqa.saliency.methods import normalise
from xiqa.saliency.smoothing import smooth


def test_smoothing_is_an_11x11_sigma_1_gaussian_with_reflect_padding() -> None:
    maps = torch.rand(2, 20, 17, generator=torch.Generator().manual_seed(0))
    # scipy's "mirror" is torch's "reflect" (the edge pixel is not repeated); radius 5 = 11 taps.
    expected = np.stack([ndimage.gaussian_filter(m.double().numpy(), sigma=1.0, mode="mirror", radius=5)
                         for m in maps])
    got = smooth(maps)
    torch.testing.assert_close(got.double(), normalise(torch.from_numpy(expected)), atol=1e-6, rtol=0)
    assert got.dtype == torch.float32 and got.amin() == 0 and got.amax() == 1


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
