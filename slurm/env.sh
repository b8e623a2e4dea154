# Sourced by the sbatch templates: hpcinv's environment and the one way to start it on the job's nodes.
#
# HPCINV_VENV    the virtual environment to activate (default: .venv in the hpcinv checkout)
# HPCINV_SETUP   shell lines to run first, e.g. "module load cuda/12.4"
# HPCINV_CLUSTER_DIR  shared folder for the Ray rendezvous and token (default $SLURM_SUBMIT_DIR/.hpcinv-ray)

hpcinv_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
eval "${HPCINV_SETUP:-}"
# shellcheck disable=SC1091
source "${HPCINV_VENV:-$hpcinv_root/.venv}/bin/activate"

# At the time limit SLURM sends USR2 to this script (--signal=B:USR2@120): requeue the job; the
# re-run resumes (training from its last checkpoint, generation keeping its finished shards).
requeue() {
  echo "hpcinv: time limit or preemption signal: requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR2

# One task per node; each runs the Ray bootstrap (hpcinv/distributed/cluster.py) and the first one the command.
# srun runs in the background so the trap fires while it runs.
hpcinv_srun() {
  srun --kill-on-bad-exit=1 --ntasks-per-node=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \
    hpcinv cluster "$@" &
  wait $! || { status=$?; wait $! 2>/dev/null || true; return "$status"; }
}
