"""Run a command, prefix every output line with the seconds since the start, and write
``OUT/run.log`` and ``OUT/meta.json`` (wall seconds, threads, machine, per-stage seconds from DVC's
"Running stage" lines, and a reference workload timed before and after, so that runs on hosts of
different speed can be compared). Used by scripts/demo_run.sh."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path


def reference_seconds() -> float:
    """Seconds of a fixed CPU workload: 20 training steps of a small convolutional network on a
    seeded batch (8 x 3 x 128 x 128), at the current thread settings. The same code on a faster
    or less loaded host takes less; it calibrates the study's wall time, not a benchmark."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                        nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                        nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(8, 3, 128, 128), torch.randint(0, 2, (8,))
    begin = time.perf_counter()
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return time.perf_counter() - begin


def stage_seconds(marks: list[tuple[float, str]], seconds: float) -> dict[str, float]:
    """Seconds per stage name from ``(start, name)`` marks in order and the run's total: a
    stage lasts until the next mark (the last one until the end). No marks (an up-to-date
    ``dvc repro`` runs no stage): no stages."""
    stages: dict[str, float] = {}
    ends = [t for t, _ in marks[1:]] + [seconds]
    for (t, name), t_next in zip(marks, ends, strict=False):
        stages[name] = stages.get(name, 0.0) + t_next - t
    return stages


def main(out: Path, command: list[str]) -> int:
    """Run ``command``, log its output with seconds into ``out``, and write the per-stage timings."""
    out.mkdir(parents=True, exist_ok=True)
    before = reference_seconds()
    start = time.monotonic()
    marks: list[tuple[float, str]] = []
    with open(out / "run.log", "w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout or ():
            t = time.monotonic() - start
            found = re.search(r"Running stage '([^'@]+)", line)
            if found:
                marks.append((t, found.group(1)))
            log.write(f"{t:8.1f} {line}")
            sys.stdout.write(line)
        rc = proc.wait()
    seconds = time.monotonic() - start
    after = reference_seconds()
    stages = stage_seconds(marks, seconds)
    import torch

    threads = os.environ.get("OMP_NUM_THREADS")
    meta = {"seconds": round(seconds, 1), "returncode": rc,
            "threads": f"OMP_NUM_THREADS={threads}" if threads else f"default threads ({torch.get_num_threads()})",
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, no GPU",
            "stages": ", ".join(f"{k} {v / 60:.1f} min" for k, v in stages.items()),
            "reference_seconds": [round(before, 2), round(after, 2)]}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
