#!/usr/bin/env bash
# Create .venv in the repo root and install e3d-zoo with every extra that runs on a CPU.
# Idempotent: a second run with an unchanged pyproject.toml installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.e3d-setup-stamp
want=$(cat pyproject.toml runtime/pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setup: installing dependencies into .venv (first run: a few minutes)" >&2
.venv/bin/python -m pip install -q --upgrade pip
# e3d-zoo depends on e3d-runtime (runtime/, the torch-free edge side) by name: install it
# from the checkout first so the resolver never looks for it on an index.
.venv/bin/python -m pip install -q -e ./runtime
# torch 2.14.1 + torchvision 0.29.1 are the pair that installs from this machine's disk
# and imports cleanly together (timm needs torchvision).
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[dev]"
# Upgrading an older .venv whose e3d-zoo still owned e3d-infer/e3d-export: uninstalling that
# e3d-zoo removes the scripts e3d-runtime has just written, so write them again.
if [ ! -x .venv/bin/e3d-infer ] || [ ! -x .venv/bin/e3d-export ]; then
    .venv/bin/python -m pip install -q --no-deps --force-reinstall -e ./runtime
fi
echo "$want" > "$stamp"
