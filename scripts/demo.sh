#!/usr/bin/env bash
# Set up .venv (if needed) and run the end-to-end demo (the project's main job).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m e3d_eval.demo "$@"
