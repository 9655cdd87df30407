#!/usr/bin/env bash
# The GPU check for any NVIDIA machine: TensorRT fp32/fp16/INT8 engines for E3D-S where
# tensorrt imports, and the CUDA PyTorch path (fp32, fp16/bf16 autocast, channels_last_3d,
# torch.compile, CUDA graphs), each verified against PyTorch fp32 and timed. Prints one JSON
# document and writes it to OUT (default: gpu_check.json in the current folder).
#
#   bash eval/gpu_check.sh [OUT.json] [extra gpu_check.py options]
#
# Uses the machine's own python3 (PYTHON=... to pick another) and installs nothing: the
# repo's packages are put on PYTHONPATH through a folder of symlinks that mirrors the
# installed layout (e3d_zoo with its searched_archs, e3d_export, e3d_eval, e3d_runtime when
# the repo has it), so it works offline and whatever pip/setuptools the machine has.
# Stops starting new work after 7 minutes and is killed at 8; the JSON is written after
# every section, so even a killed run leaves what it measured.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
OUT=${1:-gpu_check.json}
[ $# -gt 0 ] && shift
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
SHIM=$(mktemp -d "${TMPDIR:-/tmp}/e3d_gpu_check.XXXXXX")
trap 'rm -rf "$SHIM"' EXIT

mkdir "$SHIM/e3d_zoo"
for entry in "$REPO"/e3d_zoo/*; do
    ln -s "$entry" "$SHIM/e3d_zoo/$(basename "$entry")"
done
[ -e "$SHIM/e3d_zoo/searched_archs" ] || ln -s "$REPO/searched_archs" "$SHIM/e3d_zoo/searched_archs"
ln -s "$REPO/export" "$SHIM/e3d_export"
ln -s "$REPO/eval" "$SHIM/e3d_eval"
for cand in runtime/e3d_runtime runtime/src/e3d_runtime e3d_runtime; do
    if [ -d "$REPO/$cand" ]; then ln -s "$REPO/$cand" "$SHIM/e3d_runtime"; break; fi
done
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1  # keep the repo clean

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "gpu_check.sh: error: $PY not found (set PYTHON=/path/to/python3)" >&2
    exit 2
fi
# Run from the shim: `python -m` puts the working directory first on sys.path, and from the
# repo root that is the source folder e3d_zoo/, which lacks the searched_archs it installs with.
cd "$SHIM" || exit 2
export PYTHONSAFEPATH=1
timeout --kill-after=10 480 "$PY" -m e3d_eval.gpu_check --out "$OUT" "$@"
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "gpu_check.sh: error: killed after 8 minutes; partial results are in $OUT" >&2
fi
exit $rc
