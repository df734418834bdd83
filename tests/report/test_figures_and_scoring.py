"""Scoring one model on a tiny split, its figure sample, and the overlay layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xiqa.data.dataset import Split, read_boxes
from xiqa.evaluation.scoring import figure_sample, score_split
from xiqa.models import zoo
from xiqa.report import figures as F
from xiqa import schema as S
from xiqa.report.audit import parse_boxes
from xiqa.errors import XiqaError

SIZE = 64
METHODS = ["input_x_gradient", "gradcam", "normgrad_conv3x3_single", "normgrad_conv1x1_multi"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = zoo.build("resnet34")
    zoo.estimate_bn_statistics(model, [torch.randn(4, 3, SIZE, SIZE)])
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (4, 1, SIZE, SIZE), dtype=torch.uint8, generator=g)
    split = Split("objectcxr", "test", SIZE, images, torch.tensor([1, 0, 1, 1]),
                  ("a.jpg", "b.jpg", "c.jpg", "d.jpg"), torch.tensor([[128, 128]] * 4))
    # original pixels (128 px scans, so input = original / 2); b.jpg has no box
    boxes = {"a.jpg": np.array([[10, 10, 40, 40.0]]), "c.jpg": np.array([[60, 60, 127, 127.0], [0, 0, 5, 5.0]]),
             "d.jpg": np.array([[100, 0, 120, 20.0]])}
    result = score_split(model, "resnet34", split, boxes, methods=METHODS, tolerance=15, batch_size=2,
                         sample_ids=["c.jpg", "a.jpg"])
    return split, boxes, result


def test_per_image_rows_cover_scored_images_methods_and_both_smoothing_flags(tiny):
    split, boxes, result = tiny
    df = result.per_image
    assert list(df.columns) == list(S.PER_IMAGE_COLUMNS)
    assert set(df["image_id"]) == {"a.jpg", "c.jpg", "d.jpg"}  # only images with a box are scored
    assert len(df) == 3 * len(METHODS) * 2
    assert set(df["hit"].unique()) <= {0, 1}
    assert set(df["smoothed"]) == {0, 1}


def test_hits_agree_with_the_spec_distance_rule_on_the_logged_peaks(tiny):
    split, boxes, result = tiny
    for _, r in result.per_image.iterrows():
        if r["constant"]:
            assert r["hit"] == 0
            continue
        inside = False
        for x0, y0, x1, y1 in boxes[r["image_id"]]:
            # plain maths: original -> input pixels (every input pixel the box overlaps), inclusive
            bx0, by0 = np.floor(x0 / 2), np.floor(y0 / 2)
            bx1, by1 = np.ceil((x1 + 1) / 2) - 1, np.ceil((y1 + 1) / 2) - 1
            dx = max(bx0 - r["peak_x"], 0, r["peak_x"] - bx1)
            dy = max(by0 - r["peak_y"], 0, r["peak_y"] - by1)
            inside |= dx * dx + dy * dy < 15 ** 2
        assert r["hit"] == int(inside)


def _input_boxes(boxes: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Plain maths: original (128 px) -> input (64 px) pixels, every input pixel the box overlaps."""
    return [(int(np.floor(x0 / 2)), int(np.floor(y0 / 2)), int(np.ceil((x1 + 1) / 2) - 1), int(np.ceil((y1 + 1) / 2) - 1))
            for x0, y0, x1, y1 in boxes]


def _near(u: int, v: int, boxes, tau: float) -> bool:
    return any(max(x0 - u, 0, u - x1) ** 2 + max(y0 - v, 0, v - y1) ** 2 < tau ** 2 for x0, y0, x1, y1 in boxes)


def test_baselines_are_one_row_per_scored_image_and_equal_plain_loops_over_pixels(tiny):
    _, boxes, result = tiny
    base = result.baselines
    assert list(base.columns) == list(S.BASELINE_COLUMNS)
    assert sorted(base["image_id"]) == ["a.jpg", "c.jpg", "d.jpg"]
    for _, r in base.iterrows():
        b = _input_boxes(boxes[r["image_id"]])
        count = sum(_near(u, v, b, 15) for u in range(SIZE) for v in range(SIZE))
        assert r["chance"] == count / SIZE ** 2
        assert r["centre"] == int(_near(31, 31, b, 15))  # 64 px: centre pixel (63 // 2, 63 // 2)
    assert result.baseline_accuracies() == {"chance": base["chance"].mean(), "centre": base["centre"].mean()}


def test_accuracies_are_hit_means_and_finite(tiny):
    _, _, result = tiny
    acc = result.accuracies(True)
    df = result.per_image
    for m, v in acc.items():
        rows = df[(df["method"] == m) & (df["smoothed"] == 1)]
        assert v == pytest.approx(rows["hit"].mean()) and np.isfinite(v)


def test_figure_sample_is_seeded_and_only_from_scored_images():
    ids = [f"{i}.jpg" for i in range(20)]
    assert figure_sample(ids, 4, 0) == figure_sample(list(reversed(ids)), 4, 0)
    assert len(set(figure_sample(ids, 4, 0))) == 4
    assert figure_sample(ids[:2], 4, 0) == sorted(ids[:2])
    assert figure_sample(ids, 0, 0) == []


def test_sample_maps_round_trip_and_layouts_render(tiny, tmp_path):
    split, _, result = tiny
    sample = result.sample
    assert sample.image_ids == ["c.jpg", "a.jpg"]
    assert sample.maps[True].shape == (2, len(METHODS), SIZE, SIZE) and sample.maps[True].dtype == np.uint8
    assert np.array_equal(sample.images[1], split.images[0, 0].numpy())
    assert sample.boxes[0].tolist() == [[30, 30, 63, 63], [0, 0, 2, 2]]
    # the stored peaks are the per-image table's
    df = result.per_image
    row = df[(df.image_id == "a.jpg") & (df.method == "gradcam") & (df.smoothed == 1)].iloc[0]
    m = sample.methods.index("gradcam")
    assert tuple(sample.peaks[True][1, m]) == (row.peak_x, row.peak_y)
    back = F.SampleMaps.load(sample.save(tmp_path / "maps.npz"))
    assert back.image_ids == sample.image_ids and np.array_equal(back.maps[False], sample.maps[False])
    assert [b.tolist() for b in back.boxes] == [b.tolist() for b in sample.boxes]
    fig = F.variants_figure([("FR", back), ("trained", sample)], "t")
    assert len(fig.axes) == 2 * 2 * (1 + len(METHODS))
    path = F.save_figure(fig, tmp_path / "fig.png")
    assert path.stat().st_size > 1000
    assert F.save_figure(F.smoothing_figure(sample), tmp_path / "s.png").is_file()


def test_variant_figures_refuse_models_scored_on_different_samples(tiny):
    _, _, result = tiny
    other = F.SampleMaps(["x.jpg", "a.jpg"], *[getattr(result.sample, k) for k in
                                               ("methods", "images", "boxes", "maps", "peaks", "hits")])
    with pytest.raises(XiqaError, match="different figure sample"):
        F.variants_figure([("a", result.sample), ("b", other)])


def test_no_box_in_the_split_is_an_error_not_nan(tiny):
    split, _, _ = tiny
    with pytest.raises(XiqaError, match="no image of the test split has a box"):
        score_split(torch.nn.Identity(), "resnet34", split, {}, tolerance=15)


def test_read_boxes_groups_rows_by_image(tmp_path):
    p = tmp_path / "boxes.csv"
    p.write_text("image_id,x0,y0,x1,y1\na.jpg,1,2,3,4\na.jpg,5,6,7,8\nb.jpg,0,0,1,1\n")
    boxes = read_boxes(p)
    assert boxes["a.jpg"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]] and len(boxes["b.jpg"]) == 1
    p.write_text("image_id,x0,y0,x1,y1\na.jpg,1,two,3,4\n")
    with pytest.raises(XiqaError, match="row 2"):
        read_boxes(p)


def test_parse_boxes_accepts_spaces_and_trailing_separator_and_names_bad_boxes():
    assert parse_boxes(" 1,2,3,4 ; 5, 6, 7, 8;").tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert parse_boxes(None).shape == (0, 4)
    with pytest.raises(XiqaError, match="'1,2,3'"):
        parse_boxes("1,2,3")
    with pytest.raises(XiqaError, match="x0 <= x1"):
        parse_boxes("5,0,1,4")


def test_skipped_layer_counts_sum_each_scored_image_explained_alone(tiny):
    split, boxes, result = tiny
    torch.manual_seed(0)  # the fixture's model is not kept: rebuild it the same way
    model = zoo.build("resnet34")
    zoo.estimate_bn_statistics(model, [torch.randn(4, 3, SIZE, SIZE)])
    from xiqa import saliency

    expected = 0
    for i, image_id in enumerate(split.ids):
        if image_id in boxes:
            info: dict = {}
            saliency.explain(model.eval(), split.inputs([i]), ["normgrad_conv1x1_multi"], arch="resnet34", info=info)
            expected += int(info["skipped_layers/normgrad_conv1x1_multi"].sum())
    assert result.skipped_layers == {"normgrad_conv1x1_multi": expected}


def test_explain_scan_scores_a_scan_as_the_split_scores_the_same_image(tiny):
    """xiqa explain and the evaluate stage share one scoring core (score_batch): a scan given at
    the input size, with its boxes in input pixels, gets the split's prediction, peaks and hits."""
    from xiqa.evaluation.scan import explain_scan

    split, boxes, result = tiny
    torch.manual_seed(0)  # the fixture's model is not kept: rebuild it the same way
    model = zoo.build("resnet34")
    zoo.estimate_bn_statistics(model, [torch.randn(4, 3, SIZE, SIZE)])
    k = split.ids.index("c.jpg")
    gray = split.images[k, 0].numpy().astype(np.float32) / 255.0  # decodes back to the same uint8 input
    scan, maps, image, in_boxes = explain_scan(model, "resnet34", gray, SIZE, np.asarray(_input_boxes(boxes["c.jpg"])),
                                               METHODS, tolerance=15)
    assert np.array_equal(image, split.images[k, 0].numpy())
    rows = result.per_image[(result.per_image["image_id"] == "c.jpg") & (result.per_image["smoothed"] == 1)]
    assert scan.predicted == int(rows["predicted"].iloc[0])
    assert scan.probability_positive == pytest.approx(float(rows["probability"].iloc[0]), abs=1e-5)
    for v, (_, r) in zip(scan.verdicts, rows.iterrows(), strict=True):
        assert (v.method, v.peak, v.hit, v.constant) == (r["method"], (r["peak_x"], r["peak_y"]), bool(r["hit"]),
                                                         bool(r["constant"]))
        assert maps[v.method].shape == (SIZE, SIZE)
