"""`xiqa explain` on a DICOM and a PNG scan, with and without boxes, through a registered model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from xiqa.cli import app
from xiqa.data.images import write_dicom

SIZE = 48
REF = "xiqa-lvot-resnet34@fr-s1"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """An embedded store holding one registered (randomised, BN-calibrated) ResNet-34."""
    import mlflow

    from xiqa.models import zoo
    from xiqa.tracking import registry, runs

    root = tmp_path_factory.mktemp("explain")
    (root / "params.yaml").write_text("{}\n")
    torch.manual_seed(0)
    model = zoo.build("resnet34")
    zoo.estimate_bn_statistics(model, [torch.randn(4, 3, SIZE, SIZE)])
    with runs.tracked_run(root, "lvot", "fr", {}, {}):
        registry.register(model, dataset="lvot", arch="resnet34", library="torchvision", condition="fr", seed=1, image_size=SIZE,
                          data_md5="0" * 32, git_commit="test")
    mlflow.set_tracking_uri("")  # the CLI must find the store by itself
    rng = np.random.default_rng(0)
    scan = (rng.random((96, 80)) * 1000).astype(np.uint16)
    scan[30:50, 20:40] += 3000  # a bright object
    write_dicom(root / "scan.dcm", scan)
    Image.fromarray((scan / scan.max() * 255).astype(np.uint8)).save(root / "scan.png")
    return root


def _explain(project: Path, monkeypatch, *args: str):
    monkeypatch.setenv("XIQA_PROJECT", str(project))
    return CliRunner().invoke(app, ["explain", *args], catch_exceptions=False)


@pytest.mark.parametrize("scan, methods", [("scan.dcm", []), ("scan.png", ["--method", "gradcam"])])
def test_explain_without_boxes_prints_prediction_and_peaks_and_writes_the_overlay(project, monkeypatch, scan, methods):
    out = project / f"{scan}.overlay.png"
    res = _explain(project, monkeypatch, str(project / scan), "--model", REF, *methods, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert re.search(r"prediction: class [01] .*probability [01]\.\d{3}", res.output)
    peaks = re.findall(r"^(\w+)\s+peak x=(\d+) y=(\d+)", res.output, flags=re.M)
    assert len(peaks) == (10 if not methods else 1)
    assert all(0 <= int(x) < 80 and 0 <= int(y) < 96 for _, x, y in peaks)  # the scan's own pixels
    assert " hit" not in res.output and " miss" not in res.output
    assert out.is_file() and Image.open(out).size[0] > 100


@pytest.mark.parametrize("scan", ["scan.dcm", "scan.png"])
def test_explain_with_boxes_gives_a_verdict_per_method(project, monkeypatch, scan):
    out = project / f"{scan}.boxes.png"
    # one box covering the scan (every peak is a hit) for the first run; a far corner pixel with
    # a tiny tau for the other
    boxes, tau, expect = ("0,0,79,95", "15", "hit") if scan == "scan.dcm" else ("0,0,0,0", "0.5", None)
    res = _explain(project, monkeypatch, str(project / scan), "--model", REF, "--boxes", boxes, "--tolerance", tau,
                   "--method", "gradcam", "--method", "normgrad_conv3x3_multi", "--out", str(out))
    assert res.exit_code == 0, res.output
    verdicts = re.findall(r"^(\w+)\s+peak x=(\d+) y=(\d+) .*\s(hit|miss)", res.output, flags=re.M)
    assert [m for m, *_ in verdicts] == ["gradcam", "normgrad_conv3x3_multi"]
    for _, x, y, verdict in verdicts:
        assert verdict == (expect or ("hit" if (x, y) == ("0", "0") else "miss"))
    assert out.is_file()


def test_explain_names_a_bad_box_or_unknown_model(project, monkeypatch):
    bad = _explain(project, monkeypatch, str(project / "scan.png"), "--model", REF, "--boxes", "1,2,3")
    assert bad.exit_code == 2 and "'1,2,3'" in bad.output
    missing = _explain(project, monkeypatch, str(project / "scan.png"), "--model", "xiqa-lvot-resnet34@nope")
    assert missing.exit_code == 2 and "not found" in missing.output


def _verdicts_at(output: str, tau: float) -> list[tuple[str, str]]:
    """(printed verdict, the verdict of the printed input peak against the box (0, 0, 0, 0) at tau)."""
    found = re.findall(r"^(\w+)\s+peak x=\d+ y=\d+ \(input (\d+),(\d+)\)\s+(hit|miss)", output, flags=re.M)
    assert found, output
    return [(verdict, "hit" if int(u) ** 2 + int(v) ** 2 < tau ** 2 else "miss") for _, u, v, verdict in found]


def test_explain_states_tau_derived_from_the_models_dataset_and_input_size(project, monkeypatch):
    # the model is an LVOT one at 48 px; params.yaml is empty, so the paper's 15 px at 224 px
    tau = 15 * SIZE / 224
    res = _explain(project, monkeypatch, str(project / "scan.png"), "--model", REF, "--boxes", "0,0,0,0",
                   "--method", "gradcam", "--method", "input_x_gradient", "--out", str(project / "tau.png"))
    assert res.exit_code == 0, res.output
    assert f"Pointing Game tau: {tau:g} input pixels (15 px at 224 px, scaled to {SIZE} px)" in res.output
    assert all(printed == expected for printed, expected in _verdicts_at(res.output, tau))
    # the project's params.yaml decides: 15 px at 48 px is 15 input pixels here
    params = project / "params.yaml"
    params.write_text("evaluate: {tolerance_at: {lvot: 48}}\n")
    try:
        res = _explain(project, monkeypatch, str(project / "scan.png"), "--model", REF, "--boxes", "0,0,0,0",
                       "--method", "gradcam", "--out", str(project / "tau.png"))
    finally:
        params.write_text("{}\n")
    assert res.exit_code == 0, res.output
    assert f"Pointing Game tau: 15 input pixels (15 px at 48 px, scaled to {SIZE} px)" in res.output
    assert all(printed == expected for printed, expected in _verdicts_at(res.output, 15.0))
    # --tolerance overrides it, in input pixels
    res = _explain(project, monkeypatch, str(project / "scan.png"), "--model", REF, "--tolerance", "2.5",
                   "--method", "gradcam", "--out", str(project / "tau.png"))
    assert res.exit_code == 0 and "Pointing Game tau: 2.5 input pixels (--tolerance)" in res.output
