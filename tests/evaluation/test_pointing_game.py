"""Pointing Game: exact distance rule, inclusive boxes, unions, ties, constant maps, scaling, and the
no-information baselines (chance, centre) against brute force through `hits` itself."""

from __future__ import annotations

import math

import pytest
import torch

from xiqa.errors import XiqaError
from xiqa.evaluation import stats
from xiqa.evaluation.pointing_game import (METRIC, centre_hits, centre_pixel, chance_hits, constant_maps,
                                           hits, peaks, scale_boxes)


def peak_map(x: int, y: int, h: int = 64, w: int = 80) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[y, x] = 1.0
    return m


def box(*xyxy: int) -> torch.Tensor:
    return torch.tensor([list(xyxy)])


def test_pointing_game_counts_distance_exactly_tau_as_miss_and_just_under_as_hit() -> None:
    # box covers x in [40, 45], y in [10, 20]; peaks straight to the left and diagonally away
    maps = torch.stack([peak_map(25, 15), peak_map(26, 15), peak_map(31, 32), peak_map(31, 31)])
    boxes = [box(40, 10, 45, 20)] * 4
    # dx = 15 (d = 15: miss), dx = 14 (hit), (dx, dy) = (9, 12) -> d = 15 (miss), (9, 11) -> d² = 202 (hit)
    assert hits(maps, boxes, tolerance=15.0).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert hits(maps[:1], boxes[:1], tolerance=15.0 + 1e-9).tolist() == [1.0]


def test_boxes_are_inclusive_on_both_ends() -> None:
    maps = torch.stack([peak_map(45, 20), peak_map(46, 20), peak_map(40, 10)])
    assert hits(maps, [box(40, 10, 45, 20)] * 3, tolerance=0.5).tolist() == [1.0, 0.0, 1.0]


def test_several_boxes_act_as_a_union_and_the_peak_is_column_x_row_y() -> None:
    maps = torch.stack([peak_map(70, 5), peak_map(5, 60), peak_map(40, 30)])
    two = torch.tensor([[60, 0, 79, 9], [0, 50, 9, 63]])
    assert hits(maps, [two] * 3, tolerance=1.0).tolist() == [1.0, 1.0, 0.0]
    # a row/column swap (the paper code's mirrored peak) would hit this box instead
    assert hits(peak_map(70, 5)[None], [box(0, 65, 10, 75)], tolerance=1.0).tolist() == [0.0]
    assert peaks(peak_map(70, 5)[None]).tolist() == [[70, 5]]


def test_ties_resolve_to_the_first_maximum_in_row_major_order() -> None:
    m = torch.zeros(1, 64, 80)
    m[0, 30, 5] = m[0, 10, 70] = m[0, 10, 75] = 1.0  # first in row-major order: row 10, column 70
    assert peaks(m).tolist() == [[70, 10]]
    assert hits(m, [box(68, 8, 72, 12)], tolerance=1.0).tolist() == [1.0]
    assert hits(m, [box(3, 28, 7, 32)], tolerance=1.0).tolist() == [0.0]


def test_constant_map_is_a_miss_and_is_reported() -> None:
    maps = torch.stack([torch.zeros(64, 80), torch.full((64, 80), 0.7), peak_map(0, 0)])
    everywhere = box(0, 0, 79, 63)
    assert hits(maps, [everywhere] * 3, tolerance=15.0).tolist() == [0.0, 0.0, 1.0]
    assert constant_maps(maps).tolist() == [True, True, False]
    assert constant_maps(torch.full((1, 4, 4), 0.3) + torch.tensor([0, 3e-8, 0, 0])).tolist() == [True]


def test_images_without_boxes_are_excluded_as_nan() -> None:
    maps = torch.stack([peak_map(10, 10), peak_map(10, 10), peak_map(50, 50)])
    result = hits(maps, [box(5, 5, 15, 15), torch.zeros(0, 4), box(0, 0, 1, 1)], tolerance=15.0)
    assert result[0] == 1.0 and math.isnan(result[1]) and result[2] == 0.0
    assert stats.accuracy(result.numpy()) == 0.5
    assert all(math.isnan(v) for v in hits(maps[:2], [torch.zeros(0, 4)] * 2, tolerance=15.0).tolist())
    with pytest.raises(XiqaError, match="no image with a box was scored"):
        stats.accuracy(torch.full((2,), math.nan).numpy())


def test_hits_is_vectorised_and_validates_its_input() -> None:
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(50, 32, 48, generator=gen)
    boxes = [torch.tensor([[i % 48, i % 32, min(i % 48 + 3, 47), min(i % 32 + 2, 31)]]) for i in range(50)]
    fast = hits(maps, boxes, tolerance=4.0)
    for i in range(50):  # against a per-image loop over every box pixel
        u, v = peaks(maps[i:i + 1])[0].tolist()
        x0, y0, x1, y1 = boxes[i][0].tolist()
        near = any((px - u) ** 2 + (py - v) ** 2 < 16 for px in range(x0, x1 + 1) for py in range(y0, y1 + 1))
        assert fast[i].item() == float(near), i
    with pytest.raises(XiqaError, match="2 maps but boxes for 1"):
        hits(maps[:2], boxes[:1], tolerance=4.0)
    with pytest.raises(XiqaError, match="x1 < x0"):
        hits(maps[:1], [box(10, 0, 5, 3)], tolerance=4.0)
    assert METRIC.higher_is_better and METRIC.needs == ("boxes",)


def test_boxes_scale_correctly_from_non_square_originals() -> None:
    # original 200 wide x 100 high -> input 100 x 100: x halves, y stays
    assert scale_boxes(box(10, 10, 19, 19), (200, 100), (100, 100)).tolist() == [[5, 10, 9, 19]]
    # 300 x 150 -> 600 x 600: every input pixel overlapping the box (x doubles, y quadruples)
    assert scale_boxes(box(0, 0, 0, 0), (300, 150), (600, 600)).tolist() == [[0, 0, 1, 3]]
    # 2000 x 1800 -> 600 x 600: a 1-pixel box never vanishes, the far corner stays inside
    assert scale_boxes(torch.tensor([[1999, 1799, 1999, 1799], [1000, 0, 1003, 2]]), (2000, 1800), (600, 600)).tolist() \
        == [[599, 599, 599, 599], [300, 0, 301, 0]]  # x: [1000, 1004) * 0.3 = [300, 301.2)
    # boxes tiling the original tile the input (no gap, at most one shared pixel)
    halves = scale_boxes(torch.tensor([[0, 0, 99, 99], [100, 0, 199, 99]]), (200, 100), (64, 64))
    assert halves.tolist() == [[0, 0, 31, 63], [32, 0, 63, 63]]
    # float coordinates (as CSV readers give them) are rounded to pixels first
    assert scale_boxes(torch.tensor([[9.6, 10.2, 19.4, 19.0]]), (200, 100), (100, 100)).tolist() == [[5, 10, 9, 19]]


def _random_boxes(gen: torch.Generator, w: int, h: int, k: int) -> torch.Tensor:
    """k inclusive boxes in a w x h input; a third of them pushed against a border."""
    out = []
    for _ in range(k):
        bw = int(torch.randint(1, max(2, w // 3), (1,), generator=gen))
        bh = int(torch.randint(1, max(2, h // 3), (1,), generator=gen))
        x0 = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
        y0 = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
        side = int(torch.randint(0, 6, (1,), generator=gen))
        x0 = {0: 0, 1: w - bw}.get(side, x0)
        y0 = {2: 0, 3: h - bh}.get(side, y0)
        out.append([x0, y0, x0 + bw - 1, y0 + bh - 1])
    return torch.tensor(out).reshape(-1, 4)


def _every_pixel_as_peak(w: int, h: int) -> torch.Tensor:
    """[H * W, H, W]: map i has its single maximum at pixel i (row-major)."""
    return torch.eye(h * w).reshape(h * w, h, w)


@pytest.mark.parametrize("w, h, tau", [(17, 17, 3.2), (16, 16, 7.5), (20, 13, 2.0), (9, 12, 0.5), (15, 10, 40.0)])
def test_chance_and_centre_baselines_equal_brute_force_through_hits(w, h, tau):
    gen = torch.Generator().manual_seed(w * 100 + h)
    images = [_random_boxes(gen, w, h, k) for k in (1, 2, 3, 4, 1, 2)] + [torch.zeros(0, 4, dtype=torch.long)]
    every = _every_pixel_as_peak(w, h)
    chance = chance_hits(images, (w, h), tau)
    centre = centre_hits(images, (w, h), tau)
    assert chance.dtype == torch.float64 and math.isnan(chance[-1]) and math.isnan(centre[-1])
    u, v = centre_pixel((w, h))
    for i, b in enumerate(images[:-1]):
        # brute force: every pixel centre as the peak of a map, played through hits itself
        brute = hits(every, [b] * (w * h), tolerance=tau)
        assert chance[i].item() == brute.sum().item() / (w * h), (i, b.tolist())
        assert centre[i].item() == brute[v * w + u].item(), (i, b.tolist())


def test_chance_of_a_box_covering_the_input_is_one_and_of_a_far_pixel_is_its_disc():
    assert chance_hits([box(0, 0, 9, 7)], (10, 8), 0.5).tolist() == [1.0]
    # a one-pixel box in the middle of a 21 x 21 input, tau 3.2: the integer points with
    # dx² + dy² < 10.24, counted by hand per row dy = 0, ±1, ±2, ±3: 7 + 2 * (7 + 5 + 3) = 37
    assert chance_hits([box(10, 10, 10, 10)], (21, 21), 3.2).tolist() == [37 / 441]
    # distance exactly tau is a miss: tau = 3 counts dx² + dy² < 9 only (not (±3, 0), (0, ±3)):
    # rows dy = 0, ±1, ±2 hold |dx| <= 2, row ±3 nothing: 5 + 2 * (5 + 5) = 25
    assert chance_hits([box(10, 10, 10, 10)], (21, 21), 3.0).tolist() == [25 / 441]


def test_centre_pixel_is_where_a_centred_single_bump_map_peaks():
    for w, h in ((16, 16), (17, 17), (16, 9), (1, 2)):
        u, v = centre_pixel((w, h))
        x = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
        y = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
        bump = torch.exp(-(x[None, :] ** 2 + y[:, None] ** 2) / 8)  # symmetric: exact ties for even sides
        assert peaks(bump[None]).tolist() == [[u, v]], (w, h)
    assert centre_pixel((128, 128)) == (63, 63) and centre_pixel((112, 112)) == (55, 55)
    assert centre_hits([box(60, 60, 62, 62), box(0, 0, 3, 3)], (128, 128), 1.5).tolist() == [1.0, 0.0]
    with pytest.raises(XiqaError, match="x1 < x0"):
        chance_hits([box(5, 0, 1, 3)], (10, 10), 2.0)
    with pytest.raises(XiqaError, match="positive"):
        chance_hits([box(0, 0, 1, 1)], (0, 10), 2.0)
