"""The input convention of an audited model: flags over version tags, one sentence per problem."""

from __future__ import annotations

import pytest
import torch

from xiqa.data.dataset import Split
from xiqa.errors import XiqaError
from xiqa.evaluation.audit import InputConvention, convention_split, input_convention

NONE = dict.fromkeys(("image_size", "channels", "mean", "std", "positive_class"))


def test_flags_win_over_tags_and_one_mean_serves_every_channel() -> None:
    tags = {"image_size": "224", "channels": "3", "mean": "0.5", "std": "0.2,0.3,0.4", "positive_class": "1"}
    got = input_convention(tags, NONE | {"image_size": 96, "positive_class": 0})
    assert got == InputConvention(96, 3, (0.5, 0.5, 0.5), (0.2, 0.3, 0.4), 0)


@pytest.mark.parametrize("tags, message", [
    ({}, "image_size, channels, mean, std, positive_class missing; pass --image-size, --channels"),
    ({"image_size": "224", "channels": "2", "mean": "0", "std": "1", "positive_class": "1"}, "channels: expected 1 or 3, got 2"),
    ({"image_size": "224", "channels": "3", "mean": "0,0", "std": "1", "positive_class": "1"},
     "mean: expected 3 comma-separated numbers .* got '0,0'"),
    ({"image_size": "224", "channels": "1", "mean": "0", "std": "0", "positive_class": "1"}, "std: every value must be positive"),
    ({"image_size": "big", "channels": "1", "mean": "0", "std": "1", "positive_class": "1"}, "image_size: expected an integer, got 'big'"),
])
def test_a_missing_or_malformed_convention_is_one_sentence_naming_it(tags: dict, message: str) -> None:
    with pytest.raises(XiqaError, match=message):
        input_convention(tags, NONE)


def test_the_split_is_resized_and_normalised_the_models_way() -> None:
    images = torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)
    split = Split("objectcxr", "test", 8, images, torch.tensor([0, 1]), ("a", "b"), torch.tensor([[8, 8], [8, 8]]))
    out = convention_split(split, InputConvention(4, 1, (0.5,), (0.25,), 1))
    x = out.inputs([0, 1])
    assert x.shape == (2, 1, 4, 4) and torch.equal(x, torch.full_like(x, (1.0 - 0.5) / 0.25))
    assert out.image_size == 4 and out.ids == ("a", "b")
