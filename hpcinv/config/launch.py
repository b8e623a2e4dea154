"""What the SLURM launchers ask for (``python -m launch.*``) and how a Ray cluster is brought up over a
job step's nodes (``hpcinv cluster``)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from hpcinv.config.base import Section
from hpcinv.environment import environment


class SlurmConfig(Section):
    """What a launcher (``python -m launch.*``) asks SLURM for: the one table of SLURM defaults. The
    launchers' flags are made from it (``--cpus-per-node`` for ``cpus_per_node``), and the #SBATCH lines
    of slurm/*.sbatch hold the same defaults (tests/test_launch.py checks both)."""

    nodes: int = Field(1, ge=1, description="nodes (one Ray node each)")
    cpus_per_node: int = Field(2, ge=1, description="CPUs per node")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node")
    mem_gb: float | None = Field(None, gt=0, description="memory per node in GB (default: the partition's)")
    partition: str | None = Field(None, description="partition (default: the cluster's default partition)")
    time: int = Field(60, ge=1, description="time limit in minutes")
    signal_delay_s: int = Field(
        120, ge=10, description="USR2 this many seconds before the time limit: checkpoint and requeue"
    )
    account: str | None = Field(None, description="account to charge")
    qos: str | None = Field(None, description="quality of service")
    constraint: str | None = Field(None, description="node features, e.g. a100")
    job_name: str | None = Field(None, description="job name (default: hpcinv-<stage>)")
    after: str | None = Field(None, description="start only after job JOBID succeeded (afterok)")
    folder: str = Field("slurm-logs", description="shared folder for job logs, pickles and the Ray rendezvous")
    setup: list[str] = Field([], description="shell line run before the job, e.g. 'module load cuda/12.4' (repeatable)")
    max_timeouts: int = Field(3, ge=0, description="requeues after hitting the time limit (preemptions: always)")


class ClusterConfig(Section):
    """How a Ray cluster is brought up over the nodes of a SLURM job step (``hpcinv cluster`` and the
    launchers' jobs; :mod:`hpcinv.distributed.cluster`). ``hpcinv cluster``'s flags and the launchers'
    are made from it."""

    cluster_dir: str | None = Field(
        None,
        description="shared folder for the head address and the job's token (default: $HPCINV_CLUSTER_DIR, "
        "else $SLURM_SUBMIT_DIR/.hpcinv-ray; launchers: FOLDER/ray)",
    )
    object_store_gb: float | None = Field(
        None,
        ge=0.1,
        description="Ray object store per node in GB (default: $HPCINV_OBJECT_STORE_GB, else 30% of the "
        "job's memory on the node)",
    )
    join_timeout_s: float = Field(300.0, gt=0, description="seconds the nodes wait for one another to join")

    def resolved(self, env: dict[str, str] | None = None) -> ClusterConfig:
        """Unset fields from the environment (``env``, default the process's); the folder made absolute."""
        values = dict(os.environ) if env is None else env
        found = environment(values)
        folder = self.cluster_dir or found.cluster_dir
        folder = folder or os.path.join(values.get("SLURM_SUBMIT_DIR", "."), ".hpcinv-ray")
        store = self.object_store_gb if self.object_store_gb is not None else found.object_store_gb
        return self.model_copy(update={"cluster_dir": str(Path(folder).resolve()), "object_store_gb": store})
