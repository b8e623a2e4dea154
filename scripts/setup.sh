#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with everything hpcinv needs.
# torch is installed first and pinned to the CPU build so pip never pulls a multi-GB CUDA build;
# on a GPU cluster install the CUDA build of the same torch version before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
