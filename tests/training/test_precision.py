"""`precision: auto` (xiqa/training/precision.py): bf16 only with the instructions and a faster
probe; the detection is tested on injected flag sets (this machine or CI's may have either), the
probe for real on a tiny convolutional network (the probe is the same for any model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xiqa.params import Recipe
from xiqa.training import precision as P

X86_AVX2 = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx avx2 fma
"""
X86_BF16 = X86_AVX2.replace("avx2 fma", "avx2 fma avx512f avx512_bf16")
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
SHAPE = (4, 3, 32, 32)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.5), nn.Linear(16, 2))  # dropout draws from the global RNG


def test_cpu_flags_reads_the_x86_flags_line_and_the_aarch64_features_line() -> None:
    assert P.bf16_instructions(P.cpu_flags(X86_AVX2)) == ()
    assert P.bf16_instructions(P.cpu_flags(X86_BF16)) == ("avx512_bf16",)
    assert P.bf16_instructions(P.cpu_flags(ARM_BF16)) == ("bf16",)
    amx = P.cpu_flags(X86_BF16.replace("avx512_bf16", "avx512_bf16 amx_bf16 amx_tile"))
    assert P.bf16_instructions(amx) == ("amx_bf16", "avx512_bf16")
    assert P.cpu_flags("model name : something\n") == frozenset()  # nothing known: nothing assumed


def test_auto_on_a_cpu_without_bf16_instructions_is_fp32_without_a_probe() -> None:
    choice = P.choose_precision("auto", _model(), SHAPE, "cpu", flags=P.cpu_flags(X86_AVX2))
    assert (choice.precision, choice.requested, choice.probe_seconds) == ("fp32", "auto", {})
    assert "without AMX-BF16 / AVX512-BF16" in choice.reason
    assert choice.params()["precision"] == "fp32" and "precision_probe_bf16_s" not in choice.params()
    # unreadable flags count as none
    assert P.choose_precision("auto", _model(), SHAPE, "cpu", flags=frozenset()).precision == "fp32"


@pytest.mark.parametrize("requested", ["fp32", "bf16", "fp16"])
def test_an_explicit_precision_is_kept_and_nothing_is_probed(requested: str) -> None:
    choice = P.choose_precision(requested, _model(), SHAPE, "cpu", flags=P.cpu_flags(X86_BF16))
    assert (choice.precision, choice.reason, choice.probe_seconds) == (requested, "set in params", {})


def test_auto_with_bf16_instructions_probes_and_keeps_bf16_only_when_clearly_faster() -> None:
    # the injected flags make the probe run on any CPU (without them bf16 is emulated: slower)
    choice = P.choose_precision("auto", _model(), SHAPE, "cpu", steps=2, flags=P.cpu_flags(X86_BF16))
    fp32, bf16 = choice.probe_seconds["fp32"], choice.probe_seconds["bf16"]
    assert fp32 > 0 and bf16 > 0
    assert choice.precision == ("bf16" if fp32 / bf16 >= P.MIN_SPEED_UP else "fp32")
    assert "avx512_bf16" in choice.reason and f"{fp32 / bf16:.2f}x" in choice.reason
    logged = choice.params()
    assert logged["precision_requested"] == "auto"
    assert logged["precision_probe_fp32_s"] == round(fp32, 5) and logged["precision_probe_bf16_s"] == round(bf16, 5)


def test_the_probe_leaves_the_model_and_the_global_random_state_as_they_were() -> None:
    model = _model().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = P.probe(model, SHAPE, "cpu", ("fp32", "bf16"), steps=1)
    assert set(seconds) == {"fp32", "bf16"}
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_auto_is_a_valid_recipe_precision() -> None:
    assert Recipe(precision="auto").precision == "auto"
