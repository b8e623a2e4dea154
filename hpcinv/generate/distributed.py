"""Ray fan-out of shard generation: long-lived modelling actors, bounded in-flight work, retries.

One :class:`ModellingActor` per CPU core (one torch thread each) or per GPU holds a
:class:`~hpcinv.generate.worker.ShardWorker` for its whole life, so a collection is loaded once
per actor (shared zero-copy from the object store) and CUDA is initialised once. The driver keeps
at most ``in_flight_per_actor`` shards queued on each actor; results are small records (path,
checksum, statistics), never arrays. A dead actor is restarted by Ray and its shard re-submitted
(``max_retries`` per shard); a user error inside a task (e.g. a bad model in a collection) stops
the run with that error.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Iterator

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError, WorkerCrashedError

from hpcinv.config import DataConfig
from hpcinv.errors import HpcinvError
from hpcinv.generate.driver import Executor, Plan
from hpcinv.generate.worker import ShardWorker
from hpcinv.store.shard import ShardSpec
from hpcinv.velocity import CollectionSource, SyntheticSource

log = logging.getLogger(__name__)

RETRY_BASE_S = 2.0  # first retry delay; doubles per attempt (2, 4, 8, 16, 32 s with max_retries=5)
LOST_WORKER_ERRORS = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one clear line instead of Ray's long reconnect loop."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise HpcinvError(f"Ray address {address!r} is not of the form HOST:PORT (or 'auto' / 'local')")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise HpcinvError(f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc}") from None


class _DropDefaultTokenNotice(logging.Filter):
    """Ray announces at every local start that it enabled token authentication; that is what we want."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_DropDefaultTokenNotice())


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``), or start a local instance sized to this machine."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("local", "auto"):
        _check_reachable(address)
    kwargs = dict(include_dashboard=False, log_to_driver=True, configure_logging=False)
    if not address or address == "local":
        ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
    else:
        ray.init(address=address, **kwargs)


@ray.remote(max_restarts=-1, max_task_retries=0)
class ModellingActor:
    """A long-lived process that models and writes shards."""

    def __init__(self, cfg_json: str, out_dir: str, collection_refs: list | None = None):
        """``collection_refs``: [ObjectRef] of an imported collection, fetched here (zero-copy per node);
        nested in a list so the driver keeps ownership and a restarted actor can fetch it again."""
        cfg = DataConfig.model_validate_json(cfg_json)
        n = cfg.dataset.n_samples
        if collection_refs:
            source = CollectionSource(cfg, n, raw=ray.get(collection_refs[0]))
        else:
            source = SyntheticSource(cfg, n)
        self.worker = ShardWorker(cfg, out_dir, source=source)

    def run(self, spec: ShardSpec) -> dict:
        return self.worker.run(spec)

    def pid(self) -> int:
        return os.getpid()


def check_gpus(cfg: DataConfig) -> None:
    """``modelling.device=cuda`` on a cluster without GPUs would wait forever for actors Ray cannot
    place: refuse it at once."""
    if cfg.modelling.device == "cuda":
        resources = ray.cluster_resources()
        if resources.get("GPU", 0) < 1:
            raise HpcinvError(
                f"modelling.device=cuda but the Ray cluster has no GPU (it has {int(resources.get('CPU', 0))} CPUs); "
                "use modelling.device=cpu (or auto), or run on GPU nodes (--gpus-per-node)")


def uses_gpu(cfg: DataConfig) -> bool:
    return cfg.modelling.device == "cuda" or (cfg.modelling.device == "auto"
                                              and ray.cluster_resources().get("GPU", 0) >= 1)


def n_workers_available(cfg: DataConfig) -> int:
    resources = ray.cluster_resources()
    if uses_gpu(cfg):
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1)) // cfg.modelling.threads)


def ray_executor(plan: Plan, *, workers: int | None = None, in_flight_per_actor: int = 2,
                 max_retries: int = 5, stats: dict | None = None) -> Executor:
    """An :data:`~hpcinv.generate.driver.Executor` running shards on Ray actors."""
    cfg = plan.cfg
    stats = stats if stats is not None else {}

    def run(specs: list[ShardSpec]) -> Iterator[dict]:
        if not specs:
            return
        n_actors = min(workers or n_workers_available(cfg), len(specs))
        options = {"num_gpus": 1, "num_cpus": 1} if uses_gpu(cfg) else {"num_cpus": cfg.modelling.threads}
        collection = None
        if isinstance(plan.source, CollectionSource):
            collection = [ray.put(plan.source.raw)]  # one shared copy per node, zero-copy reads
        cfg_json = cfg.model_dump_json()
        t0 = time.perf_counter()
        actors = [ModellingActor.options(**options).remote(cfg_json, str(plan.out), collection)
                  for _ in range(n_actors)]
        ray.get([actor.pid.remote() for actor in actors])  # all started (and a bad setup fails here)
        stats.update(workers=n_actors, retries=0, per_worker_samples={},
                     startup_s=round(time.perf_counter() - t0, 3))
        queue = deque(specs)
        attempts: dict[int, int] = {}
        delayed: list[tuple[float, ShardSpec]] = []  # (not before, spec): retries wait for restarts
        pending: dict = {}  # ObjectRef -> (spec, actor index)
        load = [0] * n_actors
        try:
            while queue or pending or delayed:
                now = time.monotonic()
                for item in [d for d in delayed if d[0] <= now]:
                    delayed.remove(item)
                    queue.appendleft(item[1])
                while queue and min(load) < in_flight_per_actor:
                    a = load.index(min(load))
                    spec = queue.popleft()
                    pending[actors[a].run.remote(spec)] = (spec, a)
                    load[a] += 1
                if not pending:
                    time.sleep(max(0.0, min(d[0] for d in delayed) - time.monotonic()))
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    spec, a = pending.pop(ref)
                    load[a] -= 1
                    try:
                        record = ray.get(ref)
                    except RayTaskError as exc:
                        cause = exc.cause if hasattr(exc, "cause") else None
                        if isinstance(cause, HpcinvError):
                            raise HpcinvError(str(cause)) from None
                        if isinstance(cause, LOST_WORKER_ERRORS) or isinstance(exc, LOST_WORKER_ERRORS):
                            delayed.append(_retry(spec, exc, attempts, max_retries, stats))
                            continue
                        raise
                    except LOST_WORKER_ERRORS as exc:
                        delayed.append(_retry(spec, exc, attempts, max_retries, stats))
                        continue
                    per = stats["per_worker_samples"]
                    per[a] = per.get(a, 0) + spec.size
                    yield record
        finally:
            for actor in actors:
                ray.kill(actor)

    return run


def _retry(spec: ShardSpec, exc: Exception, attempts: dict, max_retries: int, stats: dict) -> tuple[float, ShardSpec]:
    """Count a lost-worker failure of ``spec``; return when to resubmit it (exponential backoff, so a
    restarting actor has time to come back)."""
    attempts[spec.shard_id] = attempts.get(spec.shard_id, 0) + 1
    n = attempts[spec.shard_id]
    if n > max_retries:
        raise HpcinvError(f"{spec.name} failed {n} times; last error: {exc}") from None
    stats["retries"] += 1
    delay = RETRY_BASE_S * 2 ** (n - 1)
    log.warning("modelling worker lost while computing %s (%s); retrying in %.0f s", spec.name, type(exc).__name__,
                delay)
    return time.monotonic() + delay, spec
