#!/usr/bin/env bash
# Run the whole demo study (`dvc repro`) in a fresh clone of this checkout's HEAD, reusing this
# checkout's .venv (create it first: `make study` or `bash scripts/bootstrap.sh`), and keep the
# clone's reports/, its timestamped log and its wall time in OUT_DIR: the input of
# scripts/readme_results.py. OMP_NUM_THREADS in the environment is passed on.
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
