"""Copying ImageNet weights into a model whose parameter names do not fit is a XiqaError naming
the file and the keys (it was an ``assert``, which ``python -O`` drops)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xiqa.errors import XiqaError
from xiqa.models.init import load_imagenet_backbone
from xiqa.models.zoo import build


def test_weights_that_do_not_fit_the_model_name_the_file_and_the_keys(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "effnet-imagenet.pth"
    reference = build("efficientnet_b0", num_classes=1000)
    torch.save(reference.state_dict(), weights)
    wrapped = nn.Sequential(build("efficientnet_b0"))  # same tensors, every name prefixed with "0."
    with pytest.raises(XiqaError, match=r"effnet-imagenet\.pth: not efficientnet_b0's ImageNet weights: \d+ "
                                        r"backbone parameter\(s\) missing \(e\.g\. \['0\.features\."):
        load_imagenet_backbone(wrapped, "efficientnet_b0", weights)
    fitting = build("efficientnet_b0")
    assert load_imagenet_backbone(fitting, "efficientnet_b0", weights) == weights
    assert torch.equal(fitting.features[0][0].weight, reference.features[0][0].weight)
