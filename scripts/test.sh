#!/usr/bin/env bash
# Set up hpcinv and run its whole test suite: installs the environment, brings up the local SLURM
# cluster (slurm/local-cluster.sh; needs root and apt-get, else the SLURM tests skip), runs pytest,
# and takes the cluster down again. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  trap 'bash slurm/local-cluster.sh down' EXIT
  bash slurm/local-cluster.sh up
  export HPCINV_REQUIRE_SLURM=1  # the SLURM tests must run here, not skip
else
  echo "test: not root or no apt-get: SLURM cannot be installed here, the SLURM tests will skip" >&2
fi
.venv/bin/python -m pytest "$@"
