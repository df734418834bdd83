"""Stage start-up: seconds from interpreter start to a stage's first real work, this checkout
against a baseline commit, measured in one run.

    python benchmarks/startup.py --project DIR [--baseline REF] [--repeats 3] [--stages train,evaluate]
    python benchmarks/startup.py --project DIR --build      # first make DIR: the tiny grid, dvc repro

``DIR`` is a project in which ``dvc repro`` has run (``--build`` makes one: the tiny grid of
``tests/test_grid.py``, as ``scripts/same_report.py`` builds it, a few minutes). The benchmark works
on a throw-away copy of it, so its own MLflow runs never reach ``DIR``.

Each stage of the tiny grid is started as DVC starts it (``python -m pipelines.<stage> ...`` in the
project, same arguments), once with this checkout's ``xiqa``/``pipelines`` and once with those of
``--baseline`` (``git archive``), alternating, ``--repeats`` times; medians are printed with
after/before ratios. A stage's clock stops at its first real work, where the process is ended:

- ``data``: the first phantom writer call; ``prepare``: ``splits.prepare``;
- ``train``, ``randomise``, ``evaluate``, ``sanity``: the first forward of any ``nn.Module`` (the
  first training batch, the first scoring batch, the first saliency batch);
- ``report``: the whole stage (its work is its MLflow queries and the tables; no marker).

So the number is the fixed cost a ``dvc repro`` pays once per stage process: the interpreter,
imports, params, the MLflow store and run set-up, data mapping, model building. Then one
``-X importtime`` run per stage and code version gives the top-level imports by cumulative
seconds, and the floors are timed: ``python -c pass``, ``import torch``, ``torch + torchvision``,
``torch + torchvision + mlflow``. Timings on a shared machine are noisy: the load average is
printed beside them.

Measured (2026-12-06, 2-core CPU shared with three other engineers' experiments, 1-minute load
average 8-10 throughout, so single numbers move by 30 %; after = 86f1a7d, median of 3):

    stage      before s  after s   first work          top imports (after, -X importtime, s)
    data           1.26     1.24   first phantom       pandas 0.8, scipy 0.5, pydantic 0.2
    prepare        4.14     4.06   splits.prepare      torch 3.7, pandas 0.3, scipy 0.3
    train         10.96    13.29   first batch         torch (+ torch._dynamo) 22.7, mlflow 10.1
    randomise     14.17    18.49   first forward       mlflow 14.2, torch 12.3, torchvision 10.8
    evaluate      18.10    16.38   first forward       mlflow 7.6, torch 7.2, torchvision 5.9
    sanity        28.36    25.81   first forward       mlflow 10.0, torch 6.8, torchvision 5.3
    report        23.24    17.77   whole stage         mlflow 7.1, matplotlib 0.9
    floors: python -c pass 0.18, import torch 8.0, + torchvision 10.7, + mlflow 9.8 (same load)

Before and after are the same within the noise: the stages already imported torch, torchvision,
MLflow, pandas and matplotlib inside the functions that use them, and every stage process that
reaches its first forward uses all three of torch, torchvision and MLflow. ``torch._dynamo``
(about a third of torch + torchvision) cannot be avoided by importing submodules: Python runs
``torchvision/__init__`` for any ``torchvision.*`` import, which imports every model and
``torchvision.ops.roi_align``, whose first lines import ``torch._dynamo.utils``; and
``torch.use_deterministic_algorithms`` (the seeded training) imports ``torch._inductor.config``,
whose package imports ``torch._dynamo`` too. So the fixed cost of a model stage is the floor
``torch + torchvision + mlflow`` (6.6 s at load 4.5, 4.2 s for torch + torchvision) plus the
MLflow store and run set-up; fewer processes (seeds grouped into one), not fewer imports, cut it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

# stage -> (command arguments in the tiny grid, marker "module:attr[,attr]" or None = whole run)
FORWARD = "torch.nn.modules.module:Module.__call__"
STAGES: dict[str, tuple[list[str], str | None]] = {
    "data": (["--dataset", "objectcxr", "--no-progress"], "xiqa.data.phantoms:write_objectcxr,write_lvot"),
    "prepare": (["--dataset", "objectcxr"], "xiqa.data.splits:prepare"),
    "train": (["--dataset", "objectcxr", "--arch", "resnet34", "--seed", "1"], FORWARD),
    "randomise": (["--dataset", "objectcxr", "--arch", "resnet34", "--condition", "fr"], FORWARD),
    "evaluate": (["--dataset", "objectcxr", "--arch", "resnet34"], FORWARD),
    "sanity": (["--dataset", "objectcxr", "--arch", "resnet34"], FORWARD),
    "report": ([], None),
}

# Runs in the stage's interpreter: puts the code folder first on sys.path, wraps the marker once
# its module has been executed (an import hook, so nothing is imported early), then runs the
# stage as `python -m` would. At the marker it writes the wall-clock time and ends the process.
BOOT = r"""
import importlib.abc, importlib.machinery, os, runpy, sys, time
code, stage, marker = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path[0] = code
out = os.environ["XIQA_STARTUP_OUT"]

def hit(*_a, **_k):
    with open(out, "w") as f:
        f.write(repr(time.time()))
    os._exit(0)

if marker != "-":
    module, attrs = marker.split(":")

    def wrap(mod):
        for attr in attrs.split(","):
            owner, _, name = attr.rpartition(".")
            holder = getattr(mod, owner) if owner else mod
            setattr(holder, name, hit)

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != module:
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            run = spec.loader.exec_module

            def exec_module(mod):
                run(mod)
                wrap(mod)
            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())
sys.argv = [f"pipelines.{stage}", *sys.argv[4:]]
try:
    runpy.run_module(f"pipelines.{stage}", run_name="__main__", alter_sys=True)
finally:  # no marker: the whole stage (Typer ends it with SystemExit)
    with open(out, "w") as f:
        f.write(repr(time.time()))
"""


def start_up(project: Path, code: Path, stage: str, importtime: bool = False) -> tuple[float, str]:
    """Seconds from starting ``stage``'s interpreter (code from ``code``) to its marker, and its
    stderr (the ``-X importtime`` lines when ``importtime``)."""
    args, marker = STAGES[stage]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "t"
        env = {**os.environ, "XIQA_STARTUP_OUT": str(out), "XIQA_PROJECT": str(project)}
        env.pop("PYTHONPATH", None)
        cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", BOOT,
               str(code), stage, marker or "-", *args]
        start = time.time()
        proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
        if not out.exists():
            raise SystemExit(f"{stage} ({code}) exited {proc.returncode} before its marker:\n{proc.stderr[-3000:]}")
        return float(out.read_text()) - start, proc.stderr


def top_imports(stderr: str, n: int) -> tuple[float, list[tuple[str, float]]]:
    """Total seconds of top-level imports in ``-X importtime`` output, and the ``n`` costliest
    outside packages by cumulative seconds: each counted where the project's own code (or the
    interpreter) first imports it, so ``torch`` imported by ``xiqa.models.zoo`` counts as torch."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line.split(":", 1)[1].split("|")
        rows.append((len(name) - len(name.lstrip()), name.strip(), int(cumulative) / 1e6))
    own = ("xiqa", "pipelines")
    per: dict[str, float] = {}
    total = 0.0
    ancestors: list[str] = []  # importtime prints a module after the modules it imported
    for indent, name, seconds in reversed(rows):
        depth = (indent - 1) // 2  # one space after the bar, then two per level
        del ancestors[depth:]
        package = name.split(".")[0]
        if depth == 0:
            total += seconds
        if package not in own and all(a.split(".")[0] in own for a in ancestors):
            per[package] = per.get(package, 0.0) + seconds
        ancestors.append(name)
    ranked = sorted(per.items(), key=lambda kv: -kv[1])
    return total, ranked[:n]


def floor(code: str, repeats: int) -> float:
    """Median seconds of ``python -c code``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline_code(ref: str, dest: Path) -> Path:
    """``xiqa/`` and ``pipelines/`` of commit ``ref`` extracted under ``dest``."""
    archive = dest / "code.tar"
    subprocess.run(["git", "archive", "-o", str(archive), ref, "xiqa", "pipelines"], cwd=HERE, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "code", filter="data")
    return dest / "code"


def build(project: Path) -> None:
    """``project``: the tiny grid of tests/test_grid.py with this checkout's code, ``dvc repro`` run."""
    import yaml

    sys.path.insert(0, str(HERE))
    from tests.conftest import deep_merge
    from tests.test_grid import TINY

    project.mkdir(parents=True)
    for item in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(HERE / item, project / item)
    for folder in ("xiqa", "pipelines"):
        shutil.copytree(HERE / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((HERE / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, TINY), sort_keys=False))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "bench", "GIT_COMMITTER_NAME": "bench",
           "GIT_AUTHOR_EMAIL": "bench@xiqa", "GIT_COMMITTER_EMAIL": "bench@xiqa"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "tiny grid"], ["dvc", "repro"]):
        subprocess.run(cmd, cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    """Parse the options, time every stage in both code versions, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a project where dvc repro has run")
    parser.add_argument("--build", action="store_true", help="first build --project (the tiny grid)")
    parser.add_argument("--baseline", default="1f622c5", help="the commit to compare with (default: before #23)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, of " + ",".join(STAGES))
    parser.add_argument("--top", type=int, default=5, help="top-level imports listed per stage")
    args = parser.parse_args()
    stages = args.stages.split(",")
    if unknown := [s for s in stages if s not in STAGES]:
        parser.error(f"--stages: unknown {', '.join(unknown)}")
    if args.build:
        build(args.project)
    if not (args.project / "dvc.lock").is_file():
        parser.error(f"--project {args.project}: no dvc.lock (run dvc repro there, or pass --build)")

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="xiqa-startup-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(args.project, project, symlinks=True,
                        ignore=shutil.ignore_patterns("xiqa", "pipelines", "reports"))
        codes = {"before": baseline_code(args.baseline, Path(tmp)), "after": HERE}
        floors = {name: floor(code, args.repeats) for name, code in (
            ("python -c pass", "pass"), ("import torch", "import torch"),
            ("torch + torchvision", "import torch, torchvision"),
            ("torch + torchvision + mlflow", "import torch, torchvision, mlflow"))}
        times: dict[tuple[str, str], list[float]] = {(s, v): [] for s in stages for v in codes}
        for _ in range(args.repeats):
            for stage in stages:
                for version, code in codes.items():
                    times[(stage, version)].append(start_up(project, code, stage)[0])
        imports = {(s, v): top_imports(start_up(project, code, s, importtime=True)[1], args.top)
                   for s in stages for v, code in codes.items()}

    load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    print(f"[startup] interpreter start -> first work, {os.cpu_count()} CPUs, 1-min load average {load}; "
          f"median of {args.repeats} alternating repeats; before = {args.baseline}, after = this checkout")
    print(f"  {'stage':10s} {'before s':>9s} {'after s':>9s} {'after/before':>13s}   first work")
    for stage in stages:
        b, a = (statistics.median(times[(stage, v)]) for v in ("before", "after"))
        marker = STAGES[stage][1]
        what = "whole stage" if marker is None else marker.split(":")[1]
        print(f"  {stage:10s} {b:9.2f} {a:9.2f} {a / b:13.2f}   {what}")
    print("  floors: " + ", ".join(f"{name} {s:.2f} s" for name, s in floors.items()))
    print("[imports] -X importtime, top-level packages by cumulative seconds (one run each)")
    for stage in stages:
        for version in codes:
            total, top = imports[(stage, version)]
            print(f"  {stage:10s} {version:6s} {total:5.2f} s: " + ", ".join(f"{p} {s:.2f}" for p, s in top))


if __name__ == "__main__":
    main()
