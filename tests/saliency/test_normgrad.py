"""NormGrad against a slow plain-maths version: explicit per-pixel outer products and unfold."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from saliency_helpers import ARCHS, EPS32, SIZE, hooked_layer_tensors, preset, random_images
from xiqa.saliency import explain
from xiqa.saliency import methods as M

VILS = ("scaling", "conv1x1", "conv3x3")


def explicit_outer_norm(g: Tensor, a: Tensor) -> float:
    """‖g ⊗ a‖_F built as the explicit outer product (in row blocks of ~2M entries), float64."""
    g, a = g.double(), a.double()
    rows = max(1, 2_000_000 // a.numel())
    return sum(float((g[r:r + rows, None] * a[None, :]).square().sum()) for r in range(0, g.numel(), rows)) ** 0.5


def slow_vil_map(A: Tensor, G: Tensor, vil: str, budget: float = 1e7, dtype: torch.dtype = torch.float64) -> Tensor:
    """One image, float64, [h, w]. At pixel p the gradient of the virtual identity layer's weight is
    the outer product G(p) ⊗ (the VIL's input at p: A(p), or its zero-padded 3×3 patch from
    ``unfold``); a scaling VIL's weight is a 1×1 conv's diagonal, so its gradient is A(p) ⊙ G(p).
    The map is the Frobenius norm of that gradient: built explicitly at every pixel while that
    at corner and centre pixels (fewer for wide layers, to stay under ``budget`` entries); every
    pixel uses the sum of squares of the same two vectors, which the explicit ones must match.
    ``dtype=torch.float32`` runs the same closed form in float32 (no explicit check): its distance
    to the float64 map measures the rounding of this operation chain."""
    C, h, w = A.shape
    g = G.reshape(G.shape[0], h * w).to(dtype)
    if vil == "scaling":
        return (A.reshape(C, h * w).to(dtype) * g).square().sum(0).sqrt().reshape(h, w)
    a = (F.unfold(A[None].to(dtype), kernel_size=3, padding=1)[0] if vil == "conv3x3"
         else A.reshape(C, h * w).to(dtype))
    out = (a.square().sum(0) * g.square().sum(0)).sqrt()
    if dtype != torch.float64:
        return out.reshape(h, w)
    per_pixel = g.shape[0] * a.shape[0]
    pixels = dict.fromkeys([0, h * w - 1, (h // 2) * w + w // 2, w - 1][: max(1, int(budget // per_pixel))])
    for p in pixels:
        explicit = explicit_outer_norm(g[:, p], a[:, p])
        assert abs(explicit - float(out[p])) <= 1e-9 * max(explicit, 1e-30), (vil, p)
        out[p] = explicit
    return out.reshape(h, w)


def slow_normalise(m: Tensor) -> Tensor | None:
    """Min-max normalise one map; None for a constant one."""
    lo, hi = m.min(), m.max()
    if hi - lo <= 1e-6 * max(abs(hi), abs(lo)):
        return None
    return (m - lo) / (hi - lo)


def slow_upsample(m: Tensor, size: int) -> Tensor:
    return F.interpolate(m[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]


def slow_normgrad(acts: dict, grads: dict, names: tuple[str, ...], vil: str, size: int,
                  cache: dict | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """[N, size, size]: the product over layers of the upsampled, normalised per-layer maps,
    skipping constant ones, then normalised (single layer: one factor); arithmetic in ``dtype``."""
    n = next(iter(acts.values())).shape[0]
    result = torch.zeros(n, size, size, dtype=dtype)
    for i in range(n):
        product = torch.ones(size, size, dtype=dtype)
        for name in names:
            key = (name, i, vil, dtype)
            if cache is None or key not in cache:
                raw = slow_vil_map(acts[name][i], grads[name][i], vil, dtype=dtype)
                if cache is not None:
                    cache[key] = raw
            raw = cache[key] if cache is not None else raw
            m = slow_normalise(slow_upsample(raw, size))
            if m is not None:
                product = product * m
        final = slow_normalise(product)
        result[i] = final if final is not None else 0
    return result


def float32_tolerance(acts: dict, grads: dict, names: tuple[str, ...], vil: str, size: int,
                      expected: Tensor, cache: dict | None = None) -> float:
    """The rounding this operation chain suffers in float32, measured: the same slow closed form
    run in float32 against its float64 result (channel norms over up to 2,048 channels, bilinear
    upsampling, min-max normalisation, a product of up to ten layers), doubled, and at least a
    few float32 ulps of a value in [0, 1]."""
    in_float32 = slow_normgrad(acts, grads, names, vil, size, cache, dtype=torch.float32)
    return max(8 * EPS32, 2 * float((in_float32.double() - expected).abs().amax()))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_normgrad_variant_matches_explicit_outer_products(arch: str, random_model) -> None:
    model = random_model(arch)
    x = random_images(2, seed=7)
    target = torch.tensor([1, 0])
    layers = preset(arch)
    maps = explain(model, x, [f"normgrad_{v}_{k}" for v in VILS for k in ("single", "multi")],
                   arch=arch, target=target)
    names = list(dict.fromkeys(layers["single"] + layers["multi"]))
    acts, grads = hooked_layer_tensors(model, x, names, target)
    cache: dict = {}
    for vil in VILS:
        for kind in ("single", "multi"):
            expected = slow_normgrad(acts, grads, layers[kind], vil, SIZE, cache)
            got = maps[f"normgrad_{vil}_{kind}"]
            assert got.dtype == torch.float32 and got.shape == (2, SIZE, SIZE)
            assert expected.amax() == 1.0, f"{vil}_{kind}: reference map is degenerate"
            tol = float32_tolerance(acts, grads, layers[kind], vil, SIZE, expected, cache)
            assert tol < 1e-3, f"{arch} {vil} {kind}: float32 rounding alone moves the map by {tol / 2:.3g}"
            torch.testing.assert_close(got.double(), expected, atol=tol, rtol=0, msg=f"{arch} {vil} {kind}")


def test_closed_forms_equal_outer_product_norms_on_random_tensors() -> None:
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, 5, 4, 6, generator=gen)
    G = torch.randn(2, 7, 4, 6, generator=gen)  # the gradient may have another width (conv VILs)
    for vil, fn in M.VILS.items():
        if vil == "scaling":
            G_ = G[:, :5]
        else:
            G_ = G
        fast = fn(A, G_)
        for i in range(2):
            # float32 sums of C squares: off by at most C·ε relatively (the square root halves it),
            # plus the product of two such sums
            c = max(A.shape[1], G_.shape[1]) * (9 if vil == "conv3x3" else 1)
            torch.testing.assert_close(fast[i].double(), slow_vil_map(A[i], G_[i], vil), rtol=(c + 4) * EPS32, atol=0)
    stacked = M.normgrad_layer(A, G[:, :5], list(M.VILS))
    for k, fn in enumerate(M.VILS.values()):
        torch.testing.assert_close(stacked[:, k], fn(A, G[:, :5]))


def test_constant_layer_is_skipped_not_allowed_to_reset_the_product() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 8, 8, generator=gen), torch.rand(2, 8, 8, generator=gen)
    flat = torch.full((2, 8, 8), 0.3)
    flat[1] = torch.rand(8, 8, generator=gen)  # image 1: this layer is informative
    combined, skipped = M.combine_layers([M.normalise(a), M.normalise(flat), M.normalise(b)])
    assert skipped.tolist() == [1, 0]
    torch.testing.assert_close(combined[0], M.normalise(M.normalise(a) * M.normalise(b))[0])
    torch.testing.assert_close(combined[1], M.normalise(M.normalise(a) * M.normalise(flat) * M.normalise(b))[1])
    assert combined[0].amax() == 1.0  # the paper's code would have returned a constant map here


def test_constant_layer_in_a_real_network_is_counted_and_skipped(random_model) -> None:
    # At 64 px ResNet-34's layer4 is 2 × 2: every zero-padded 3 × 3 neighbourhood covers the whole
    # map and the gradient into global average pooling is spatially constant, so conv3x3 at
    # layer4.2 is a constant map. It must be skipped (counted), and the other layers kept.
    model = random_model("resnet34")
    x = random_images(2, seed=3, size=64)
    target = torch.tensor([0, 1])
    info: dict = {}
    layers = preset("resnet34")
    maps = explain(model, x, ["normgrad_conv3x3_multi", "normgrad_conv3x3_single"], arch="resnet34",
                   target=target, info=info)
    assert (maps["normgrad_conv3x3_single"] == 0).all()
    assert info["skipped_layers/normgrad_conv3x3_multi"].tolist() == [1, 1]
    acts, grads = hooked_layer_tensors(model, x, list(layers["multi"]), target)
    expected = slow_normgrad(acts, grads, layers["multi"][:-1], "conv3x3", 64)
    assert expected.amax() == 1.0
    tol = float32_tolerance(acts, grads, layers["multi"][:-1], "conv3x3", 64, expected)
    torch.testing.assert_close(maps["normgrad_conv3x3_multi"].double(), expected, atol=tol, rtol=0)
