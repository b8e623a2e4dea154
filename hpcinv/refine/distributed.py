"""Ray fan-out of refine: long-lived actors (one per core with one thread, or one per GPU), each
holding a :class:`~hpcinv.refine.worker.RefineWorker`, fed shards by :mod:`hpcinv.actors` (bounded in
flight, lost shards retried after the actor restarts)."""

from __future__ import annotations

import os

import ray

from hpcinv.actors import actor_executor, init_ray
from hpcinv.refine.worker import RefineWorker
from hpcinv.store.shard import ShardSpec
from hpcinv.store.writer import Executor

__all__ = ["RefineActor", "init_ray", "ray_executor"]


@ray.remote(max_restarts=-1, max_task_retries=0)
class RefineActor:
    def __init__(self, worker_args: dict):
        self.worker = RefineWorker(**worker_args)

    def run(self, spec: ShardSpec) -> dict:
        return self.worker.run(spec)

    def pid(self) -> int:
        return os.getpid()


def ray_executor(worker_args: dict, workers: int | None, stats: dict) -> Executor:
    rc = worker_args["rc"]
    resources = ray.cluster_resources()
    gpu = rc.device == "cuda" or (rc.device == "auto" and resources.get("GPU", 0) >= 1)
    if rc.device == "cuda" and resources.get("GPU", 0) < 1:
        from hpcinv.errors import HpcinvError

        raise HpcinvError(
            f"refine.device=cuda but the Ray cluster has no GPU (it has {int(resources.get('CPU', 0))} "
            "CPUs); use refine.device=cpu (or auto), or run on GPU nodes"
        )
    options = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": rc.threads}
    available = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 1)) // rc.threads
    return actor_executor(
        # @ray.remote made RefineActor an ActorClass, but mypy does not apply class decorators
        lambda: RefineActor.options(**options).remote(worker_args),  # type: ignore[attr-defined]
        workers or max(1, available),
        what="refine",
        in_flight_per_actor=1,
        stats=stats,
    )
