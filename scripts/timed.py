"""Run a command, prefix every output line with the seconds since the start, and write
``OUT/run.log`` and ``OUT/meta.json`` (wall seconds, threads, machine, per-stage seconds from DVC's
"Running stage" lines). Used by scripts/demo_run.sh."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path


def main(out: Path, command: list[str]) -> int:
    out.mkdir(parents=True, exist_ok=True)
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
    stages: dict[str, float] = {}
    for (t, name), (t_next, _) in zip(marks, marks[1:] + [(seconds, "")]):
        stages[name] = stages.get(name, 0.0) + t_next - t
    import torch

    threads = os.environ.get("OMP_NUM_THREADS")
    meta = {"seconds": round(seconds, 1), "returncode": rc,
            "threads": f"OMP_NUM_THREADS={threads}" if threads else f"default threads ({torch.get_num_threads()})",
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, no GPU",
            "stages": ", ".join(f"{k} {v / 60:.1f} min" for k, v in stages.items())}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
