#!/usr/bin/env bash
# Run the whole demo study (`dvc repro`) in a fresh clone of this checkout's HEAD, reusing this
# checkout's .venv (create it first: `make study` or `bash scripts/bootstrap.sh`), and keep the
# clone's reports/ (tables and figures, the README's overlay among them), its timestamped log and
# its wall time in OUT_DIR: the input of scripts/readme_results.py. OMP_NUM_THREADS in the
# environment is passed on.
#   usage: scripts/demo_run.sh OUT_DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
here="$(cd "$(dirname "$0")/.." && pwd)"
[ -x "$here/.venv/bin/dvc" ] || { echo "$here/.venv: no dvc; run 'bash scripts/bootstrap.sh' first" >&2; exit 2; }
mkdir -p "$1"
out="$(cd "$1" && pwd)"
work="$(mktemp -d)"
git clone -q "$here" "$work/xiqa"
cd "$work/xiqa"
ln -s "$here/.venv" .venv
export PATH="$here/.venv/bin:$PATH"
python "$here/scripts/timed.py" "$out" dvc repro
rm -rf "$out/reports"
cp -r reports "$out/reports"
echo "$work/xiqa: reports copied to $out/reports"
# the picture scripts/readme_results.py copies into docs/overlay.png (xiqa/report/overlay.py)
ls "$out"/reports/figures/overlay-*.png >/dev/null 2>&1 \
    || { echo "$out/reports/figures: no overlay-<dataset>.png (evaluate.figure_samples: 0?)" >&2; exit 1; }
