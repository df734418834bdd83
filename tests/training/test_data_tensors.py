"""Reading a prepared split as tensors, preprocessing and augmentation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from xiqa.data.dataset import (
    SPLITS,
    batches,
    cache_files,
    load_split,
    write_image_cache,
)
from xiqa.data.images import read_scan
from xiqa.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    augment,
    preprocess,
    standardise,
    to_cached,
)
from xiqa.errors import XiqaError


def test_load_split_gives_uint8_squares_labels_ids_and_original_sizes(tiny_root: Path) -> None:
    split = load_split(tiny_root, "objectcxr", "val", 32)
    rows = [r for r in csv.DictReader(open(tiny_root / "data/prepared/objectcxr/splits.csv"))
            if r["split"] == "val"]
    assert split.images.dtype == torch.uint8 and split.images.shape == (4, 1, 32, 32)
    assert list(split.ids) == [r["image_id"] for r in rows]
    assert split.labels.tolist() == [int(r["label"]) for r in rows]
    first = read_scan(tiny_root / "data/raw/objectcxr" / rows[0]["image_id"])
    assert tuple(split.sizes[0].tolist()) == (first.shape[1], first.shape[0])
    assert torch.equal(split.images[0], to_cached(first, 32))


def test_the_image_cache_holds_exactly_what_decoding_each_scan_gives(tiny_root: Path) -> None:
    # the reference is the per-scan decode + resize that load_split did before the cache
    with open(tiny_root / "data/prepared/objectcxr/images.csv", newline="") as fh:
        images_csv = {r["image_id"]: r["path"] for r in csv.DictReader(fh)}
    for name in SPLITS:
        split = load_split(tiny_root, "objectcxr", name, 40)
        decoded = torch.stack([to_cached(read_scan(tiny_root / "data/raw/objectcxr" / images_csv[i]), 40)
                               for i in split.ids])
        assert split.images.dtype == torch.uint8 and split.images.shape == decoded.shape
        assert split.images.numpy().tobytes() == decoded.numpy().tobytes()


def test_load_split_maps_the_cache_instead_of_decoding(tiny_root: Path) -> None:
    for png in (tiny_root / "data/raw/objectcxr/img").glob("*.png"):
        png.unlink()  # nothing left to decode
    split = load_split(tiny_root, "objectcxr", "test", 32)
    assert split.images.shape == (4, 1, 32, 32) and split.images.dtype == torch.uint8


def test_a_missing_image_cache_names_the_file_and_says_to_run_prepare(tiny_root: Path) -> None:
    npy, index = cache_files(tiny_root / "data/prepared/objectcxr", 48)
    with pytest.raises(XiqaError, match=rf"{index.name}: image cache not found.*dvc repro prepare"):
        load_split(tiny_root, "objectcxr", "val", 48)
    write_image_cache(tiny_root, "objectcxr", 48)
    npy.unlink()
    with pytest.raises(XiqaError, match=rf"{npy.name}: image cache not found"):
        load_split(tiny_root, "objectcxr", "val", 48)


def test_a_stale_image_cache_is_refused_naming_the_index(tiny_root: Path) -> None:
    prepared = tiny_root / "data/prepared/objectcxr"
    npy, index = cache_files(prepared, 32)
    # a cache written at another size under this name
    _, other_index = cache_files(prepared, 40)
    index.write_text(other_index.read_text())
    with pytest.raises(XiqaError, match=rf"{index.name}: cache of 40 px .*expected 32 px"):
        load_split(tiny_root, "objectcxr", "train", 32)
    # splits.csv changed after the cache was written: the ids no longer match
    write_image_cache(tiny_root, "objectcxr", 32)
    splits_csv = prepared / "splits.csv"
    lines = splits_csv.read_text().splitlines()
    splits_csv.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    with pytest.raises(XiqaError, match=rf"{index.name}: the train ids differ from splits.csv"):
        load_split(tiny_root, "objectcxr", "train", 32)
    # an array that does not match its index
    write_image_cache(tiny_root, "objectcxr", 32)
    np.save(npy, np.zeros((3, 1, 32, 32), dtype=np.uint8))
    with pytest.raises(XiqaError, match=rf"{npy.name}: array uint8 \(3, 1, 32, 32\) does not match"):
        load_split(tiny_root, "objectcxr", "train", 32)


def test_load_split_is_cached_per_process(tiny_root: Path) -> None:
    assert load_split(tiny_root, "objectcxr", "train", 32) is load_split(tiny_root, "objectcxr", "train", 32)


def test_preprocess_of_one_scan_equals_the_split_input_bit_for_bit(tiny_root: Path) -> None:
    split = load_split(tiny_root, "objectcxr", "test", 40)
    gray = read_scan(tiny_root / "data/raw/objectcxr" / split.ids[2])
    cached, inputs = preprocess(gray, 40)
    assert torch.equal(inputs, split.inputs([2])[0])
    assert torch.equal(cached, split.images[2])


def test_normalise_replicates_gray_to_three_channels_with_imagenet_statistics() -> None:
    images = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    images[1] = 0
    x = standardise(images)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    for c in range(3):
        assert float(x[0, c, 0, 0]) == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
        assert float(x[1, c, 0, 0]) == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c])


def test_augmentation_moves_each_image_differently_and_is_seeded(tiny_root: Path) -> None:
    images = load_split(tiny_root, "objectcxr", "train", 32).images[:4]
    a = augment(images, torch.Generator().manual_seed(0))
    b = augment(images, torch.Generator().manual_seed(0))
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, images)
    changes = [(a[i].float() - images[i].float()).abs().mean() for i in range(4)]
    assert len({round(float(c), 4) for c in changes}) > 1  # not one draw for the whole batch


def test_batches_are_seeded_and_drop_a_last_singleton(tiny_root: Path) -> None:
    split = load_split(tiny_root, "objectcxr", "train", 32)  # 8 rows
    order = lambda: [y.tolist() for _, y in batches(split, 7, shuffle=True,  # noqa: E731
                                                   generator=torch.Generator().manual_seed(3),
                                                   drop_singleton=True)]
    first = order()
    assert first == order() and len(first) == 1 and len(first[0]) == 7


def test_a_split_row_missing_from_images_csv_is_one_sentence_naming_the_file(tiny_root: Path) -> None:
    images_csv = tiny_root / "data/prepared/objectcxr/images.csv"
    lines = images_csv.read_text().splitlines()
    images_csv.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # drop the first image
    with pytest.raises(XiqaError, match=r"images\.csv: no row for image_id 'img/000\.png'"):
        load_split(tiny_root, "objectcxr", "train", 33)


def test_a_missing_prepared_folder_says_to_run_prepare(tmp_path: Path) -> None:
    with pytest.raises(XiqaError, match="dvc repro prepare"):
        load_split(tmp_path, "lvot", "test", 32)


def test_to_cached_clips_to_the_unit_range_and_never_rescales_per_image() -> None:
    gray = np.full((50, 60), 0.4, dtype=np.float32)
    gray[:5] = 1.7  # out of range: clipped, and the rest stays at 0.4 (no min-max)
    cached = to_cached(gray, 32)
    assert cached.dtype == torch.uint8 and cached.shape == (1, 32, 32)
    assert int(cached.max()) == 255 and int(cached[0, -1, -1]) == round(0.4 * 255)
