#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with everything hpcinv needs.
#
# torch is installed first, at the version the project is tested with, so that pip never picks a
# build by itself when it resolves the other packages:
#   bash scripts/setup.sh                      torch 2.13.0 as the default index serves it (here: the
#                                              CPU build kept on this machine's disk)
#   HPCINV_TORCH=cu126 bash scripts/setup.sh   the CUDA build from PyTorch's cu126 index (GPU nodes;
#                                              see docs/GPU.md for the variant and driver to choose)
# An existing torch in .venv is kept. `hpcinv doctor --gpu` then checks the GPU stack.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${HPCINV_TORCH:-}" ]; then
    .venv/bin/python -m pip install -q "torch==${TORCH_VERSION}" \
      --index-url "https://download.pytorch.org/whl/${HPCINV_TORCH}"
  else
    .venv/bin/python -m pip install -q "torch==${TORCH_VERSION}"
  fi
fi
.venv/bin/python -m pip install -q -e ".[test]"
