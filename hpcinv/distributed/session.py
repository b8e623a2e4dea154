"""Work on Ray actors, shared by generation and refinement: joining a cluster, and a pool of
long-lived actors fed with shards, bounded in flight, with lost work retried.

An actor class used here has ``run(spec) -> record`` (it writes the shard itself, atomically, and
returns a small record, never arrays) and ``pid()``. A dead actor is restarted by Ray
(``max_restarts=-1``) and its shard re-submitted after a back-off (``max_retries`` per shard); a user
error raised inside a task (:class:`~hpcinv.errors.HpcinvError`) stops the run with that error.
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

from hpcinv.errors import HpcinvError
from hpcinv.store.shard import ShardSpec
from hpcinv.store.writer import Executor

log = logging.getLogger(__name__)
KILL_WAIT_S = 10.0  # how long a stopped executor waits for its killed actors to be gone

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


# Ray Train's placement-group cleaner asks the State API (served by the dashboard, which hpcinv does not
# start) whether the controller lives, and warns every few seconds that it cannot: noise, not a problem.
NOISY_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_worker() -> None:
    """Run in every Ray worker process at start (``worker_process_setup_hook``): the State API's clients
    find this cluster (not another Ray instance on the same machine, which made them fail with a
    traceback), and the loggers in :data:`NOISY_LOGGERS` print errors only."""
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``), or start a local instance sized to this machine."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("local", "auto"):
        _check_reachable(address)
    kwargs = dict(
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
        runtime_env={"worker_process_setup_hook": "hpcinv.actors.quiet_worker"},
    )
    if not address or address == "local":
        ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
    else:
        ray.init(address=address, **kwargs)


def actor_placement(device: str, threads: int, workers: int | None, setting: str) -> tuple[str, dict, int]:
    """``(device, Ray options, number of actors)`` for actors that model on ``device`` (the ``setting``,
    e.g. ``modelling.device``: cpu | cuda | auto), one per GPU or one per ``threads`` CPUs.

    ``auto`` is decided here, once, from the cluster's resources, and the concrete device is what the
    actors get: resolved again inside a CPU actor on a node whose GPUs the cluster does not advertise,
    it would open a CUDA context per actor. More ``workers`` than the cluster can place, or ``cuda`` on
    a cluster without GPUs, would wait forever for actors: both are refused, naming what there is."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device == "cuda" and gpus < 1:
        raise HpcinvError(
            f"{setting}=cuda but the Ray cluster has no GPU (it has {cpus} CPUs); use {setting}=cpu (or auto), "
            "or run on GPU nodes (--gpus-per-node)"
        )
    on_gpus = device == "cuda" or (device == "auto" and gpus >= 1)
    capacity = gpus if on_gpus else cpus // threads
    if workers is not None and workers > capacity:
        each, has = ("one GPU", f"{gpus} GPUs") if on_gpus else (f"{threads} CPU(s)", f"{cpus} CPUs")
        raise HpcinvError(
            f"--workers {workers} asks for {workers} actors of {each} each, but the Ray cluster has {has}: at most "
            f"{capacity} (leave --workers out for one per {'GPU' if on_gpus else f'{threads} CPU(s)'})"
        )
    options = {"num_gpus": 1, "num_cpus": 1} if on_gpus else {"num_cpus": threads}
    return ("cuda" if on_gpus else "cpu"), options, workers or max(1, capacity)


def actor_executor(
    make_actor,
    n_actors: int,
    *,
    what: str,
    in_flight_per_actor: int = 2,
    max_retries: int = 5,
    stats: dict | None = None,
) -> Executor:
    """An :data:`~hpcinv.store.writer.Executor` running shards on ``n_actors`` actors made by ``make_actor()``
    (at most ``in_flight_per_actor`` shards queued on each). ``what`` names the work in messages.
    ``stats`` receives workers, retries, startup_s and per_worker_samples."""
    stats = stats if stats is not None else {}

    def run(specs: list[ShardSpec]) -> Iterator[dict]:
        if not specs:
            return
        t0 = time.perf_counter()
        actors = [make_actor() for _ in range(min(n_actors, len(specs)))]
        try:
            ray.get([actor.pid.remote() for actor in actors])  # all started (and a bad setup fails here)
        except RayActorError as exc:
            if not getattr(exc, "actor_init_failed", False):
                raise
            for actor in actors:
                ray.kill(actor)
            raise HpcinvError(f"the {what} actors could not start: {init_error(exc)}") from None
        stats.update(
            workers=len(actors), retries=0, per_worker_samples={}, startup_s=round(time.perf_counter() - t0, 3)
        )
        queue = deque(specs)
        attempts: dict[int, int] = {}
        delayed: list[tuple[float, ShardSpec]] = []  # (not before, spec): retries wait for restarts
        pending: dict = {}  # ObjectRef -> (spec, actor index)
        load = [0] * len(actors)
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
                            delayed.append(_retry(spec, exc, attempts, max_retries, stats, what))
                            continue
                        raise
                    except LOST_WORKER_ERRORS as exc:
                        delayed.append(_retry(spec, exc, attempts, max_retries, stats, what))
                        continue
                    per = stats["per_worker_samples"]
                    per[a] = per.get(a, 0) + spec.size
                    yield record
        finally:
            for actor in actors:
                ray.kill(actor)
            # until the killed actors are gone (their tasks resolve): the caller may then clean up after them
            if pending:
                ray.wait(list(pending), num_returns=len(pending), timeout=KILL_WAIT_S)

    return run


def init_error(exc: RayActorError) -> str:
    """The message of the error an actor's constructor raised (hpcinv's own errors by their one line, e.g.
    a GPU preflight; anything else by the traceback's last line), from Ray's report of it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("hpcinv.errors.")]
    last = ours[-1] if ours else lines[-1] if lines else type(exc).__name__
    return last.split(": ", 1)[1] if ours and ": " in last else last


def _retry(
    spec: ShardSpec, exc: Exception, attempts: dict, max_retries: int, stats: dict, what: str
) -> tuple[float, ShardSpec]:
    """Count a lost-worker failure of ``spec``; return when to resubmit it (exponential backoff, so a
    restarting actor has time to come back)."""
    attempts[spec.shard_id] = attempts.get(spec.shard_id, 0) + 1
    n = attempts[spec.shard_id]
    if n > max_retries:
        raise HpcinvError(f"{spec.name} failed {n} times; last error: {exc}") from None
    stats["retries"] += 1
    delay = RETRY_BASE_S * 2 ** (n - 1)
    log.warning(
        "%s worker lost while computing %s (%s); retrying in %.0f s", what, spec.name, type(exc).__name__, delay
    )
    return time.monotonic() + delay, spec
