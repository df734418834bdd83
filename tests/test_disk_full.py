"""A full disk (SPEC 8.1) on a real filesystem limit: a small tmpfs mounted by the test (CI runs
as root; elsewhere the tests skip, saying why). Pointers, evaluation JSON, report tables, the
prepared image cache, a pulled model and the local MLflow artifacts each fail in one sentence
naming the path and "no space left on device"; no temporary file is left and the previous
output is intact; once space is freed the same write succeeds, and `dvc repro` of a project on
the full disk completes."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from xiqa.errors import XiqaError

try:
    from tests.conftest import BIN, run
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    from conftest import BIN, run

SIZE = 4 * 1024 * 1024


@contextmanager
def tmpfs(mount: Path, size: int) -> Iterator[Path]:
    """An empty tmpfs of ``size`` bytes mounted at ``mount``, unmounted after."""
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """An empty tmpfs of 4 MiB, unmounted after the test."""
    with tmpfs(tmp_path / "disk", SIZE) as mount:
        yield mount


def _fill(disk: Path) -> Path:
    """Write zeros into ``disk/filler`` until the file system says ENOSPC."""
    filler = disk / "filler"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                break
    return filler


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.name != "filler")


def _full_sentence(path: Path) -> str:
    return (f"{path}: no space left on device while writing it; nothing was half-written and its "
            "previous version, if any, is intact (free some space, then rerun)")


def test_pointers_json_and_tables_on_a_full_disk_keep_their_previous_version(disk: Path) -> None:
    from xiqa.io import write_json, write_text

    pointer = disk / "models" / "objectcxr-resnet34" / "trained" / "s1.json"
    table = disk / "reports" / "table2.md"
    write_json(pointer, {"run_id": "old", "model_uri": "models:/m/1"})
    write_text(table, "| old |\n")
    before = {p: _sha(p) for p in (pointer, table)}
    listing = _files(disk)
    filler = _fill(disk)
    big = {"run_id": "new", "model_uri": "models:/m/2", "pad": "x" * 100_000}
    with pytest.raises(XiqaError) as err:
        write_json(pointer, big)
    assert str(err.value) == _full_sentence(pointer)
    with pytest.raises(XiqaError) as err:
        write_text(table, "| new |\n" * 20_000)
    assert str(err.value) == _full_sentence(table)
    assert {p: _sha(p) for p in (pointer, table)} == before and _files(disk) == listing  # no temp left
    filler.unlink()
    write_json(pointer, big)
    assert '"run_id": "new"' in pointer.read_text()


def test_the_prepared_image_cache_on_a_full_disk_is_one_sentence_not_a_crash(disk: Path, tmp_path: Path) -> None:
    from xiqa.data import splits
    from xiqa.data.dataset import write_image_cache
    from xiqa.data.datasets import dataset_spec
    from xiqa.params import LvotData
    from xiqa.paths import prepared_dir, raw_dir

    spec = dataset_spec("lvot")
    spec.write_phantoms(tmp_path / "phantoms", LvotData(n_patients=6, slices_per_patient=4, size=48), 0, False)
    table = spec.import_dataset(tmp_path / "phantoms", raw_dir(disk, "lvot"), progress=False)
    splits.prepare(table, prepared_dir(disk, "lvot"), (0.5, 0.25, 0.25), 0)
    npy, index = write_image_cache(disk, "lvot", 96)
    before = (_sha(npy), _sha(index))
    listing = _files(disk)
    filler = _fill(disk)
    os.truncate(filler, filler.stat().st_size - 64 * 1024)  # room for the header, not the images
    # in a subprocess: a memory map written past the end of a full tmpfs is a SIGBUS, not an error
    code = ("import sys; from pathlib import Path; from xiqa.data.dataset import write_image_cache; "
            "from xiqa.errors import XiqaError\n"
            "try:\n    write_image_cache(Path(sys.argv[1]), 'lvot', 96)\n"
            "except XiqaError as err:\n    print(err); sys.exit(2)")
    proc = subprocess.run([sys.executable, "-c", code, str(disk)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert (proc.returncode, proc.stdout.strip()) == (2, _full_sentence(npy)), proc.stderr[-2000:]
    assert (_sha(npy), _sha(index)) == before and _files(disk) == listing
    filler.unlink()
    write_image_cache(disk, "lvot", 96)
    assert (_sha(npy), _sha(index)) == before  # the same images, written whole


def test_local_mlflow_artifacts_on_a_full_disk_fail_the_stage_in_one_sentence(
        disk: Path, capsys: pytest.CaptureFixture) -> None:
    import mlflow
    import typer

    from pipelines._common import run as stage_boundary
    from xiqa.tracking.runs import tracked_run
    from xiqa.tracking.store import ensure_store

    root = disk / "proj"
    root.mkdir()
    (root / "params.yaml").write_text("{}\n")
    ensure_store(root)
    payload = disk.parent / "per_image.csv"
    payload.write_bytes(os.urandom(512 * 1024))
    app = typer.Typer()

    @app.command()
    def main() -> None:
        with tracked_run(root, "lvot", "evaluate lvot-resnet34 trained-s1", {}, {}):
            mlflow.log_metric("pg", 0.5)
            filler = _fill(disk)
            os.truncate(filler, filler.stat().st_size - 256 * 1024)  # room for the database, not the CSV
            mlflow.log_artifact(str(payload))

    argv, sys.argv = sys.argv, ["evaluate"]
    try:
        with pytest.raises(SystemExit) as stopped:
            stage_boundary(app)
    finally:
        sys.argv = argv
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("xiqa:")]
    assert stopped.value.code == 2 and len(lines) == 1, err
    (disk / "filler").unlink()
    [run] = mlflow.search_runs(experiment_names=["xiqa-lvot"], output_format="list")
    assert run.info.status == "FAILED" and run.data.metrics == {"pg": 0.5}  # what was logged before stays
    artifacts = root / "mlruns" / "xiqa-lvot" / run.info.run_id / "artifacts"
    assert lines[0] == (f"xiqa: error: {artifacts}: no space left on device while MLflow wrote the run's "
                        f"artifacts; run {run.info.run_id} is marked FAILED and keeps no model version "
                        "(free some space, then rerun)")


TINY_LVOT = {"data": {"lvot": {"n_patients": 8, "slices_per_patient": 3, "size": 48}},
             "prepare": {"train": 0.5, "val": 0.25, "test": 0.25}, "train": {"lvot": {"image_size": 48}}}


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_dvc_repro_on_a_full_disk_fails_in_one_sentence_and_completes_once_space_is_freed(
        make_project, tmp_path: Path) -> None:
    """A git + DVC project on a 48 MiB tmpfs (its DVC cache and state too): `dvc repro
    prepare@lvot` with 64 KiB left fails in the stage's one sentence naming the image cache,
    leaves no temporary file and the data stage's output intact; with the space freed the same
    `dvc repro` completes and `dvc status` finds the stage up to date."""
    with tmpfs(tmp_path / "disk", 48 * 1024 * 1024) as disk:
        root = make_project(TINY_LVOT, name="disk/project")
        dvc = str(BIN / "dvc")
        run(root, dvc, "repro", "data@lvot")
        raw = _tree(root / "data" / "raw" / "lvot")
        filler = _fill(disk)
        os.truncate(filler, filler.stat().st_size - 64 * 1024)
        failed = run(root, dvc, "repro", "prepare@lvot", check=False)
        cache = root / "data" / "prepared" / "lvot" / "images_48px.npy"
        assert failed.returncode != 0, failed.stdout
        errors = [line for line in failed.stderr.splitlines() if line.startswith("xiqa:")]
        assert errors == [f"xiqa: error: {_full_sentence(cache)}"], failed.stderr
        assert "Traceback" not in failed.stderr, failed.stderr
        assert not cache.exists() and not [p for p in (root / "data").rglob(".*") if p.name.endswith((".tmp", ".old"))]
        assert _tree(root / "data" / "raw" / "lvot") == raw
        filler.unlink()
        done = run(root, dvc, "repro", "prepare@lvot")
        assert "Running stage 'prepare@lvot'" in done.stdout and cache.is_file(), done.stdout
        assert "up to date" in run(root, dvc, "status", "prepare@lvot").stdout
