#!/usr/bin/env bash
# Set up hpcinv and run its whole test suite: installs the environment, brings up the local SLURM
# cluster (slurm/local-cluster.sh; where it cannot be installed -- no root, no apt-get -- the SLURM
# tests skip), runs pytest, and takes the cluster down again. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
trap 'bash slurm/local-cluster.sh down >/dev/null 2>&1 || true' EXIT
status=0
bash slurm/local-cluster.sh up || status=$?
if ((status == 0)); then
  eval "$(bash slurm/local-cluster.sh env)"  # SLURM_CONF: the cluster's own configuration
  export HPCINV_REQUIRE_SLURM=1  # the SLURM tests must run here, not skip
elif ((status == 3)); then
  echo "test: SLURM cannot be installed here (see above): the SLURM tests will skip" >&2
else
  exit "$status"  # installed but not working: a failure, not a skip
fi
.venv/bin/python -m pytest "$@"
