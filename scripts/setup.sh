#!/usr/bin/env bash
# Creates .venv and installs the project with its dev extras. Idempotent.
# torch is installed first and pinned to the CPU build available on our machines; a machine
# that already has a torch in .venv keeps it (GPU machines bring their own CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[dev]"
