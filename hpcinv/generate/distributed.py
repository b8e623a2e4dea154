"""Ray fan-out of shard generation: long-lived modelling actors on the pool of :mod:`hpcinv.actors`.

One :class:`ModellingActor` per CPU core (one torch thread each) or per GPU holds a
:class:`~hpcinv.generate.worker.ShardWorker` for its whole life, so a collection is loaded once
per actor (shared zero-copy from the object store) and CUDA is initialised once. Results are small
records (path, checksum, statistics), never arrays; lost actors are restarted and their shards
retried; a user error inside a task (e.g. a bad model in a collection) stops the run with that error.
"""

from __future__ import annotations

import os

import ray
import torch

from hpcinv.actors import actor_executor, actor_placement, init_ray
from hpcinv.config import DataConfig
from hpcinv.generate.driver import Plan
from hpcinv.generate.worker import ShardWorker
from hpcinv.store.shard import ShardSpec
from hpcinv.store.writer import Executor
from hpcinv.velocity import CollectionSource, SyntheticSource, VelocitySource

__all__ = ["ModellingActor", "init_ray", "placement", "ray_executor"]


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=2)
class ModellingActor:
    """A long-lived process that models and writes shards: with two shards queued (on a GPU) they run at
    once on two threads, one modelling (the device is held by one at a time) while the other is written."""

    def __init__(self, cfg_json: str, out_dir: str, collection_refs: list | None = None):
        """``collection_refs``: [ObjectRef] of an imported collection, fetched here (zero-copy per node);
        nested in a list so the driver keeps ownership and a restarted actor can fetch it again."""
        cfg = DataConfig.model_validate_json(cfg_json)
        torch.set_num_threads(cfg.modelling.threads)  # this process models only
        n = cfg.dataset.n_samples
        source: VelocitySource
        if collection_refs:
            source = CollectionSource(cfg, n, raw=ray.get(collection_refs[0]))
        else:
            assert n is not None  # synthetic: make_source refused n_samples=null in the driver
            source = SyntheticSource(cfg, n)
        self.worker = ShardWorker(cfg, out_dir, source=source)

    def run(self, spec: ShardSpec) -> dict:
        return self.worker.run(spec)

    def pid(self) -> int:
        return os.getpid()


def placement(cfg: DataConfig, workers: int | None = None) -> tuple[str, dict, int]:
    """The modelling actors' device, Ray options and count (:func:`~hpcinv.actors.actor_placement`); also
    the check, before anything is written, that the cluster can hold them."""
    return actor_placement(cfg.modelling.device, cfg.modelling.threads, workers, "modelling.device")


def ray_executor(
    plan: Plan,
    *,
    workers: int | None = None,
    in_flight_per_actor: int | None = None,
    max_retries: int = 5,
    stats: dict | None = None,
) -> Executor:
    """An :data:`~hpcinv.store.writer.Executor` running ``plan``'s shards on modelling actors.

    ``in_flight_per_actor`` (default: 2 on GPUs, 1 on CPUs): with 2, one shard is modelled while the
    other is written, so a GPU does not wait for the host work. A CPU actor runs one shard at a time:
    there its host work is 0.5 % of the modelling, and two concurrent shards made a one-thread actor
    4-8 % slower (docs/SCALING.md)."""
    device, options, n_actors = placement(plan.cfg, workers)
    if in_flight_per_actor is None:
        in_flight_per_actor = 2 if device == "cuda" else 1
    collection = None
    if isinstance(plan.source, CollectionSource):
        collection = [ray.put(plan.source.raw)]  # one shared copy per node, zero-copy reads
    # the actors get the device decided here, never "auto" (not part of the dataset's hash)
    cfg = plan.cfg.model_copy(update={"modelling": plan.cfg.modelling.model_copy(update={"device": device})})
    cfg_json = cfg.model_dump_json()
    return actor_executor(
        # @ray.remote made ModellingActor an ActorClass, but mypy does not apply class decorators
        lambda: ModellingActor.options(**options).remote(cfg_json, str(plan.out), collection),  # type: ignore[attr-defined]
        n_actors,
        what="modelling",
        in_flight_per_actor=in_flight_per_actor,
        max_retries=max_retries,
        stats=stats,
    )
