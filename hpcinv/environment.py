"""Every environment variable hpcinv reads, in one place.

Python code reads them only through :func:`environment`; the shell scripts (``scripts/setup.sh``,
``slurm/*.sbatch``, ``slurm/local-cluster.sh``) and the tests read the ones marked so in :data:`VARIABLES`.
``hpcinv config env`` prints the table with the values in effect; docs/DEVELOPING.md explains it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from hpcinv.errors import ConfigError

# name -> (who reads it, what it does)
VARIABLES: dict[str, tuple[str, str]] = {
    "HPCINV_CLUSTER_DIR": (
        "hpcinv cluster",
        "shared folder for the Ray rendezvous of a SLURM job (default: $SLURM_SUBMIT_DIR/.hpcinv-ray)",
    ),
    "HPCINV_OBJECT_STORE_GB": (
        "hpcinv cluster",
        "Ray object store per node in GB (default: 30% of the job's memory on the node)",
    ),
    "HPCINV_RAY_TMP": ("hpcinv cluster", "node-local parent folder of Ray's temp dir (default: /tmp)"),
    "HPCINV_KEEP_RAY_TMP": ("hpcinv cluster", "1: keep Ray's temp dir (its logs) when a node stops"),
    "HPCINV_RAY_NODE_IP": ("hpcinv cluster", "this node's address for Ray (default: the outward route's address)"),
    "HPCINV_LOG_DIR": ("hpcinv", "where an unexpected error's full traceback is written (default: the temp folder)"),
    "HPCINV_TORCH": ("scripts/setup.sh", "PyTorch wheel variant, e.g. cu126 (default: the CPU build)"),
    "HPCINV_VENV": ("slurm/*.sbatch", "virtualenv the job activates (default: the checkout's .venv)"),
    "HPCINV_SETUP": ("slurm/*.sbatch", "shell line run before activating it (e.g. 'module load cuda')"),
    "HPCINV_SLURM_NODES": ("slurm/local-cluster.sh", "nodes of the local test cluster (default 2)"),
    "HPCINV_SLURM_CPUS": ("slurm/local-cluster.sh", "CPUs per node of the local test cluster"),
    "HPCINV_SLURM_MEM_MB": ("slurm/local-cluster.sh", "memory per node of the local test cluster"),
    "HPCINV_SLURM_DIR": ("slurm/local-cluster.sh", "state and config folder of the local test cluster"),
    "HPCINV_LOCAL_CLUSTER": ("slurm/local-cluster.sh", "set by it on the daemons it starts: how down finds its own"),
    "HPCINV_REQUIRE_SLURM": ("tests", "1: the SLURM tests fail instead of skipping when no cluster answers"),
    "HPCINV_REQUIRE_DATA": ("tests", "1: tests of ../shared/data fail instead of skipping when it is absent"),
    "HPCINV_SHARED_DATA": ("tests, benchmarks", "the public reference data folder (default: ../shared/data)"),
    "HPCINV_BENCH_DIR": ("benchmarks", "scratch folder for the benchmarks' datasets (default: the temp folder)"),
    "HPCINV_UPDATE_GOLDEN": ("tests", "1: rewrite tests/golden/*.sbatch from the launchers (then review the diff)"),
}


@dataclass(frozen=True)
class Environment:
    """The variables the Python code uses, parsed and checked."""

    cluster_dir: str | None
    object_store_gb: float | None
    ray_tmp: str
    keep_ray_tmp: bool
    ray_node_ip: str | None
    log_dir: str


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def environment(env: dict[str, str] | None = None) -> Environment:
    """Read hpcinv's variables from ``env`` (default: the process environment); bad values are a one-line error."""
    env = dict(os.environ) if env is None else env
    store = env.get("HPCINV_OBJECT_STORE_GB") or None
    gb = None
    if store is not None:
        try:
            gb = float(store)
        except ValueError:
            gb = -1.0
        if not gb > 0:
            raise ConfigError(f"HPCINV_OBJECT_STORE_GB={store!r}: expected a number of GB > 0, e.g. 8")
    return Environment(
        cluster_dir=env.get("HPCINV_CLUSTER_DIR") or None,
        object_store_gb=gb,
        ray_tmp=env.get("HPCINV_RAY_TMP") or "/tmp",
        keep_ray_tmp=_flag(env.get("HPCINV_KEEP_RAY_TMP")),
        ray_node_ip=env.get("HPCINV_RAY_NODE_IP") or None,
        log_dir=env.get("HPCINV_LOG_DIR") or tempfile.gettempdir(),
    )


def describe_environment(env: dict[str, str] | None = None) -> str:
    """The table of :data:`VARIABLES` with the value each has here (``-`` where unset)."""
    env = dict(os.environ) if env is None else env
    width = max(map(len, VARIABLES))
    lines = []
    for name, (reader, doc) in VARIABLES.items():
        lines.append(f"{name:<{width}}  {env.get(name, '-')!s:<12}  {reader:<22}  {doc}")
    return "\n".join(lines)
