"""Ray fan-out of refine: long-lived actors (one per core with one thread, or one per GPU), each
holding a :class:`~hpcinv.refine.worker.RefineWorker`, fed shards by :mod:`hpcinv.actors` (bounded in
flight, lost shards retried after the actor restarts)."""

from __future__ import annotations

import os

import ray
import torch

from hpcinv.actors import actor_executor, actor_placement, init_ray
from hpcinv.refine.worker import RefineWorker
from hpcinv.store.shard import ShardSpec
from hpcinv.store.writer import Executor

__all__ = ["RefineActor", "init_ray", "placement", "ray_executor"]


@ray.remote(max_restarts=-1, max_task_retries=0)
class RefineActor:
    def __init__(self, worker_args: dict):
        torch.set_num_threads(worker_args["rc"].threads)  # this process refines only
        self.worker = RefineWorker(**worker_args)

    def run(self, spec: ShardSpec) -> dict:
        return self.worker.run(spec)

    def pid(self) -> int:
        return os.getpid()


def placement(rc, workers: int | None = None) -> tuple[str, dict, int]:
    """The refine actors' device, Ray options and count (:func:`~hpcinv.actors.actor_placement`); also
    the check, before anything is written, that the cluster can hold them."""
    return actor_placement(rc.device, rc.threads, workers, "refine.device")


def ray_executor(worker_args: dict, workers: int | None, stats: dict) -> Executor:
    device, options, n_actors = placement(worker_args["rc"], workers)
    # the actors get the device decided here, never "auto" (not part of the store's hash)
    worker_args = {**worker_args, "rc": worker_args["rc"].model_copy(update={"device": device})}
    return actor_executor(
        # @ray.remote made RefineActor an ActorClass, but mypy does not apply class decorators
        lambda: RefineActor.options(**options).remote(worker_args),  # type: ignore[attr-defined]
        n_actors,
        what="refine",
        in_flight_per_actor=1,
        stats=stats,
    )
