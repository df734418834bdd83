"""scripts/derived_presets.py: one Markdown row per architecture, the study's cut at the paper's
depth J; a bad name is one sentence and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import derived_presets as dp  # noqa: E402


def test_a_row_names_the_derived_layers_the_cascade_length_and_guided_backprop() -> None:
    assert dp.row("tests.models.test_derive:make_tiny") == (
        "| tests.models.test_derive:make_tiny | `stage` | `stage.1` | `stem.0`, `stage.0`, `stage.1` (3 of 3) "
        "| 3 | no: guided backprop has no rule for GELU at 'stem.2' (GELU) |")
    assert dp.row("resnet34").startswith(
        "| resnet34 | `layer4` | `layer4.2` | `layer2.0`, `layer3.0`, `layer4.0`, `layer4.2` (4 of 6) | 6 | yes (ReLU) |")


def test_an_unknown_architecture_is_one_sentence_and_exit_2() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "derived_presets.py"), "resnet_99"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: unknown architecture 'resnet_99'")
