"""Hostile and broken input, table-driven (issue 6, part 4): every case must end in one clear
:class:`XiqaError` sentence naming the culprit (file / row / key / value), and leave the
previous output exactly as it was.

Import cases run ``import_dataset(source, target)`` over a target that already holds a
previous import; params cases validate a ``params.yaml``; scan cases decode one file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xiqa.data import lvot, objectcxr, phantoms
from xiqa.data.images import read_scan, write_png
from xiqa.errors import XiqaError
from xiqa.params import parse_params


# --------------------------------------------------------------------------- sources
@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pristine")
    phantoms.write_objectcxr(root / "cxr", 6, 64, 72, seed=0)
    phantoms.write_lvot(root / "lvot", 2, 2, 48, seed=0)
    return {"cxr": root / "cxr", "lvot": root / "lvot"}


def _csv(name: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    """A breaker that rewrites the source's CSV ``name`` through ``edit``."""
    def breaker(source: Path) -> None:
        path = source / name
        edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)
    return breaker


def _set(name: str, column: str, value: str) -> Callable[[Path], None]:
    """A breaker that sets ``column`` of the first row of CSV ``name`` to ``value``."""
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[0, column] = value
        return df
    return _csv(name, edit)


def _first_positive(df: pd.DataFrame) -> int:
    return int(df.index[df["label"] == "1"][0])


def _lvot_swap_image(d: Path, make: Callable[[Path], None], suffix: str) -> None:
    """Replace the first slice by a file ``make`` writes, with ``suffix``, in the manifest."""
    df = pd.read_csv(d / "manifest.csv", dtype=str, keep_default_na=False)
    new = Path(df.loc[0, "image"]).with_suffix(suffix).as_posix()
    make(d / new)
    df.loc[0, "image"] = new
    df.to_csv(d / "manifest.csv", index=False)


def _lvot_mask(d: Path, arr: np.ndarray, positive: bool) -> None:
    df = pd.read_csv(d / "manifest.csv", dtype=str, keep_default_na=False)
    row = _first_positive(df) if positive else int(df.index[df["label"] == "0"][0])
    (d / "masks").mkdir(exist_ok=True)
    write_png(d / "masks" / "bad.png", arr)
    df.loc[row, "mask"] = "masks/bad.png"
    df.to_csv(d / "manifest.csv", index=False)


CXR_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated JPEG": (lambda d: (d / "train/00000.jpg").write_bytes((d / "train/00000.jpg").read_bytes()[:300]),
                       r"train/00000\.jpg: cannot decode image"),
    "not an image": (lambda d: (d / "train/00000.jpg").write_bytes(b"GIF89a? no"), r"00000\.jpg: cannot decode image"),
    "empty file": (lambda d: (d / "train/00000.jpg").write_bytes(b""), r"00000\.jpg: cannot decode image"),
    "odd coordinates": (_set("train.csv", "annotation", "0 1 2 3"),
                        r"train\.csv row 1 .*malformed object '0 1 2 3' \(an odd number"),
    "unknown shape type": (_set("train.csv", "annotation", "5 1 2 3 4"),
                           r"row 1 .*malformed object '5 1 2 3 4' \(the shape type"),
    "letters as coordinates": (_set("train.csv", "annotation", "0 a b c d"),
                               r"row 1 .*'0 a b c d' \(coordinates must be numbers\)"),
    "NaN coordinate": (_set("train.csv", "annotation", "1 nan 2 3 4"),
                       r"row 1 .*\(coordinates must be finite\)"),
    "infinite coordinate": (_set("train.csv", "annotation", "0 1 2 inf 4"),
                            r"row 1 .*\(coordinates must be finite\)"),
    "rectangle with three points": (_set("train.csv", "annotation", "0 1 2 3 4 5 6"),
                                    r"needs exactly two corner points, got 3"),
    "polygon with one point": (_set("train.csv", "annotation", "2 1 2"),
                               r"a polygon needs at least two points, got 1"),
    "box entirely outside the image": (_set("train.csv", "annotation", "0 900 900 950 950"),
                                       r"row 1 .*object box .* lies outside the \d+x\d+ image"),
    "duplicate image name": (_csv("train.csv", lambda df: pd.concat([df, df.iloc[:1]])),
                             r"already listed in row 1"),
    "../ in a name": (_set("train.csv", "image_name", "../x.jpg"),
                      r"row 1 \('\.\./x\.jpg'\): file name '\.\./x\.jpg' escapes the folder"),
    "absolute name": (_set("train.csv", "image_name", "/etc/passwd"),
                      r"'/etc/passwd' escapes the folder"),
    "row without image": (lambda d: (d / "train/00000.jpg").unlink(), r"row 1 .*image file train/00000\.jpg not found"),
    "image without row": (lambda d: Image.new("L", (64, 64)).save(d / "train/stray.png"),
                          r"train/stray\.png: image has no row in .*train\.csv"),
    "wrong CSV columns": (lambda d: (d / "train.csv").write_text("name,objects\na.jpg,\n"),
                          r"train\.csv: missing column\(s\) image_name, annotation"),
    "missing dev.csv": (lambda d: (d / "dev.csv").unlink(), r"dev\.csv: missing \(an Object-CXR folder holds"),
    "no images at all": (lambda d: [shutil.rmtree(d / p) or (d / p).mkdir() or (d / f"{p}.csv").write_text(
        "image_name,annotation\n") for p in ("train", "dev")], r"list no images"),
}

LVOT_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "mask of the wrong size": (lambda d: _lvot_mask(d, np.zeros((10, 12), np.uint8), True),
                               r"mask 'masks/bad\.png' is 12x10 but image .* is 48x48"),
    "mask that is not binary": (lambda d: _lvot_mask(d, np.arange(48 * 48).reshape(48, 48).astype(np.uint8), True),
                                r"mask 'masks/bad\.png' is not binary"),
    "label 7": (_set("manifest.csv", "label", "7"), r"manifest\.csv row 1: label must be 0 or 1, got '7'"),
    "empty patient id": (_set("manifest.csv", "patient_id", " "), r"row 1: empty patient_id"),
    "../ in an image path": (_set("manifest.csv", "image", "../../etc/passwd"),
                             r"file name '\.\./\.\./etc/passwd' escapes the folder"),
    "absolute mask path": (_set("manifest.csv", "mask", "/etc/hostname"),
                           r"file name '/etc/hostname' escapes the folder"),
    "corrupt DICOM": (lambda d: _lvot_swap_image(d, lambda p: p.write_bytes(b"DICM" * 40), ".dcm"),
                      r"P000_s00\.dcm: cannot decode image \("),
    "3-D NPY": (lambda d: _lvot_swap_image(d, lambda p: np.save(p, np.zeros((4, 48, 48))), ".npy"),
                r"P000_s00\.npy: expected a 2-D grayscale image, got shape \(4, 48, 48\)"),
    "pickled NPY (would run code)": (lambda d: _lvot_swap_image(
        d, lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), ".npy"),
        r"P000_s00\.npy: cannot decode image \(ValueError: .*allow_pickle"),
    "duplicate slice": (_csv("manifest.csv", lambda df: pd.concat([df, df.iloc[:1]])),
                        r"already listed in row 1"),
    "missing manifest column": (_csv("manifest.csv", lambda df: df.drop(columns=["label"])),
                                r"manifest\.csv: .*label"),
}


def _previous_import(target: Path) -> dict[str, bytes]:
    target.mkdir(parents=True)
    (target / "previous.txt").write_text("the last good import")
    return {p.name: p.read_bytes() for p in target.iterdir()}


@pytest.mark.parametrize("case", sorted(CXR_CASES) + sorted(LVOT_CASES))
def test_a_broken_import_names_the_culprit_and_keeps_the_previous_import(case, pristine, tmp_path):
    kind, module = ("cxr", objectcxr) if case in CXR_CASES else ("lvot", lvot)
    breaker, message = (CXR_CASES if kind == "cxr" else LVOT_CASES)[case]
    source = tmp_path / "source"
    shutil.copytree(pristine[kind], source)
    breaker(source)
    target = tmp_path / "raw"
    before = _previous_import(target)
    with pytest.raises(XiqaError, match=message) as err:
        module.import_dataset(source, target)
    assert "\n" not in str(err.value)  # one sentence, no traceback
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("source", "raw")] == []  # no temp left


PARAMS_CASES = {
    "non-finite learning rate": ({"train": {"objectcxr": {"lr": float("nan")}}}, "train.objectcxr.lr"),
    "infinite tolerance": ({"evaluate": {"tolerance": float("inf")}}, "evaluate.tolerance"),
    "negative tolerance": ({"evaluate": {"tolerance": -1}}, "evaluate.tolerance"),
    "malformed architecture": ({"grid": {"models": [{"dataset": "objectcxr", "arch": "ResNet-34!"}]}}, "ResNet-34!"),
    "unknown condition": ({"grid": {"randomised": ["xr"]}}, "grid.randomised"),
    "unknown dataset": ({"grid": {"models": [{"dataset": "mnist", "arch": "resnet34"}]}}, "mnist"),
    "repeated seed": ({"grid": {"seeds": [1, 1]}}, "grid.seeds"),
    "unknown key": ({"evaluate": {"tolerence": 15}}, "evaluate.tolerence"),
}


@pytest.mark.parametrize("case", sorted(PARAMS_CASES))
def test_a_bad_param_names_its_key(case):
    data, fragment = PARAMS_CASES[case]
    with pytest.raises(XiqaError) as err:
        parse_params(data)
    assert fragment in str(err.value)
    assert "Traceback" not in str(err.value)


def test_a_zero_sized_scan_is_refused_naming_the_file(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 5)))
    with pytest.raises(XiqaError, match=r"empty\.npy: the image is empty \(5x0 pixels\)"):
        read_scan(tmp_path / "empty.npy")


CLI_CASES = {
    "explain: scan that does not exist": (["explain", "missing.png", "--model", "m@a"], r"missing\.png: image file not found"),
    "explain: corrupt scan": (["explain", "corrupt.png", "--model", "m@a"], r"corrupt\.png: cannot decode image"),
    "explain: malformed model reference": (["explain", "scan.png", "--model", "noalias"],
                                           r"no MLflow store here|model reference 'noalias'"),
    "explain: unknown method": (["explain", "scan.png", "--model", "m@a", "--method", "smoothgrad"],
                                r"unknown saliency method 'smoothgrad'"),
    "explain: three-number box": (["explain", "scan.png", "--model", "m@a", "--boxes", "1,2,3"],
                                  r"--boxes: '1,2,3' is not four numbers"),
    "explain: inverted box": (["explain", "scan.png", "--model", "m@a", "--boxes", "5,5,1,1"],
                              r"--boxes: '5,5,1,1' needs 0 <= x0 <= x1"),
    "explain: negative tolerance": (["explain", "scan.png", "--model", "m@a", "--tolerance", "-3"],
                                    r"--tolerance: must be a positive number"),
    "explain: no store in the project": (["explain", "scan.png", "--model", "m@a"], r"mlflow\.db: no MLflow store here"),
    "models pull: malformed reference": (["models", "pull", "bad", "--out", "pulled"],
                                         r"model reference 'bad' is not NAME@ALIAS|mlflow\.db: no MLflow store here"),
    "report: unknown format": (["report", "--format", "pdf", "--out", "r"], r"unknown report format\(s\) pdf"),
    "models list: tracking server not running": (["models", "list"], r"MLFLOW_TRACKING_URI=http://127\.0\.0\.1:\d+: "
                                                  r"tracking server not reachable \(.*refused"),
    "report: tracking host unknown": (["report", "--out", "r"], r"MLFLOW_TRACKING_URI=http://no-such-host\.invalid:5000: "
                                      r"tracking server not reachable"),
}

UNREACHABLE = {"models list: tracking server not running": "http://127.0.0.1:{port}",
               "report: tracking host unknown": "http://no-such-host.invalid:5000"}


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, never listening: a connection is refused at once
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_a_bad_command_line_says_one_sentence_exits_2_and_creates_nothing(case, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from xiqa.cli import app

    (tmp_path / "params.yaml").write_text("{}\n")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "scan.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    monkeypatch.setenv("XIQA_PROJECT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    if case in UNREACHABLE:  # answered in seconds, not after MLflow's minutes of retries
        monkeypatch.setenv("MLFLOW_TRACKING_URI", UNREACHABLE[case].format(port=_closed_port()))
    before = sorted(p.name for p in tmp_path.iterdir())
    args, message = CLI_CASES[case]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("xiqa: error:")]
    assert len(errors) == 1 and __import__("re").search(message, errors[0]), res.output
    assert "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no store, overlay or report created
