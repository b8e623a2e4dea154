"""One pool of long-lived Ray actors that computes the shards of a store: what generate, predict and
refine fan out through.

A stage gives a *worker factory* (a plain class or function of its own, no Ray in it) whose result has
``run(spec) -> record``: it computes one shard, writes it atomically and returns a small record, never
arrays. Each actor builds one worker for its whole life (a collection or a network is loaded once), on
the device the driver decided and with ``threads`` torch threads; large read-only inputs (``shared``)
travel once per node through Ray's object store.

The pool keeps at most ``in_flight`` shards queued on each actor. A dead actor is restarted by Ray
(``max_restarts=-1``; on another node when its node is gone and the cluster has room) and its shard
re-submitted to the actors that are up after a back-off (``max_retries`` per shard). Until a lost actor
answers again it gets no work; one that has not come back within ``RESTART_WAIT_S`` (its node lost and
no room elsewhere) is given up, and the run goes on with the actors left -- only when none is left does
it stop (re-running the command resumes it). A user error raised inside a task
(:class:`~hpcinv.errors.HpcinvError`) stops the run with that error. Closing the iterator (the driver
stopped) kills the actors and waits until they are gone, so the caller may clean up after them.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError, WorkerCrashedError

from hpcinv.errors import HpcinvError
from hpcinv.store import ShardSpec

log = logging.getLogger(__name__)

KILL_WAIT_S = 10.0  # how long a stopped pool waits for its killed actors to be gone
RETRY_BASE_S = 2.0  # first retry delay; doubles per attempt (2, 4, 8, 16, 32 s with max_retries=5)
RESTART_WAIT_S = 60.0  # how long a lost actor may take to come back (restarted by Ray) before it is given up
LOST_WORKER_ERRORS = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError)


@dataclass(frozen=True)
class Placement:
    """Where a pool's actors go: the device they compute on (decided once, by the driver: ``auto`` is
    never resolved inside a CPU actor, which would open a CUDA context on a node whose GPUs the cluster
    does not advertise), their Ray options and how many there are."""

    device: str
    options: dict
    actors: int


def place(device: str, threads: int, workers: int | None, setting: str) -> Placement:
    """A :class:`Placement` for actors that compute on ``device`` (the ``setting``, e.g.
    ``modelling.device``: cpu | cuda | auto), one per GPU or one per ``threads`` CPUs; also the check,
    before anything is written, that the cluster can hold them. More ``workers`` than it can place, or
    ``cuda`` on a cluster without GPUs, would wait forever: both are refused, naming what there is."""
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
    return Placement("cuda" if on_gpus else "cpu", options, workers or max(1, capacity))


@ray.remote(max_restarts=-1, max_task_retries=0)
class ShardActor:
    """A long-lived process holding one worker of a stage (built by ``factory(**kwargs)``, with the
    ``shared`` inputs fetched from the object store) and running its shards."""

    def __init__(self, factory: Callable[..., Any], kwargs: dict, shared: dict[str, list], threads: int):
        torch.set_num_threads(threads)  # this process computes shards only
        # (each shared input is an ObjectRef nested in a list, so the driver keeps ownership and a
        # restarted actor can fetch it again)
        self.worker = factory(**kwargs, **{name: ray.get(refs[0]) for name, refs in shared.items()})

    def run(self, spec: ShardSpec) -> dict:
        return self.worker.run(spec)

    def pid(self) -> int:
        return os.getpid()


@dataclass
class ShardPool:
    """Shards computed by actors, each holding ``factory(**kwargs, **shared)``: call it with the specs
    to compute (an :data:`~hpcinv.store.writer.Executor`); it yields their records as they complete.

    ``what`` names the work in messages; after a run, ``workers``, ``retries``, ``startup_s`` and
    ``per_worker_samples`` say how it went."""

    placement: Placement
    factory: Callable[..., Any]
    kwargs: dict
    what: str
    threads: int = 1
    shared: dict[str, Any] = field(default_factory=dict)
    in_flight: int = 1
    max_retries: int = 5
    workers: int = 0
    retries: int = 0
    lost_workers: int = 0
    startup_s: float = 0.0
    per_worker_samples: dict[int, int] = field(default_factory=dict)

    def _start(self, n: int) -> list:
        shared = {name: [ray.put(value)] for name, value in self.shared.items()}  # once per node, zero-copy reads
        options = self.placement.options | ({"max_concurrency": self.in_flight} if self.in_flight > 1 else {})
        # @ray.remote made ShardActor an ActorClass, but mypy does not apply class decorators
        actors = [
            ShardActor.options(**options).remote(self.factory, self.kwargs, shared, self.threads)  # type: ignore[attr-defined]
            for _ in range(n)
        ]
        try:
            ray.get([actor.pid.remote() for actor in actors])  # all started (and a bad setup fails here)
        except RayActorError as exc:
            if not getattr(exc, "actor_init_failed", False):
                raise
            for actor in actors:
                ray.kill(actor)
            raise HpcinvError(f"the {self.what} actors could not start: {init_error(exc)}") from None
        return actors

    def __call__(self, specs: list[ShardSpec]) -> Iterator[dict]:
        if not specs:
            return
        t0 = time.perf_counter()
        actors = self._start(min(self.placement.actors, len(specs)))
        self.workers, self.retries, self.lost_workers, self.per_worker_samples = len(actors), 0, 0, {}
        self.startup_s = round(time.perf_counter() - t0, 3)
        queue = deque(specs)
        attempts: dict[int, int] = {}
        delayed: list[tuple[float, ShardSpec]] = []  # (not before, spec): retries wait for restarts
        pending: dict = {}  # ObjectRef -> (spec, actor index)
        probes: dict = {}  # ObjectRef of a lost actor's pid() -> (actor index, give up at)
        load = [0] * len(actors)
        up = [True] * len(actors)  # gets work: not lost, or answered again since
        try:
            while queue or pending or delayed:
                now = time.monotonic()
                for item in [d for d in delayed if d[0] <= now]:
                    delayed.remove(item)
                    queue.appendleft(item[1])
                for ref, (a, give_up) in list(probes.items()):
                    if now >= give_up:
                        del probes[ref]
                        self._give_up(actors, a, f"it has not come back within {RESTART_WAIT_S:.0f} s")
                ready_actors = [a for a in range(len(actors)) if up[a] and load[a] < self.in_flight]
                while queue and ready_actors:
                    a = min(ready_actors, key=load.__getitem__)
                    spec = queue.popleft()
                    pending[actors[a].run.remote(spec)] = (spec, a)
                    load[a] += 1
                    ready_actors = [a for a in ready_actors if load[a] < self.in_flight]
                if not any(up) and not probes:
                    raise HpcinvError(
                        f"every {self.what} actor was lost ({len(actors)}); re-run the same command to go on "
                        "from the shards already written"
                    )
                if not pending and not probes:
                    time.sleep(max(0.0, min(d[0] for d in delayed) - time.monotonic()) if delayed else 0.1)
                    continue
                ready, _ = ray.wait([*pending, *probes], num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref in probes:
                        a, give_up = probes.pop(ref)
                        try:
                            ray.get(ref)
                        except ActorUnavailableError:  # restarting: ask again in a moment
                            time.sleep(0.2)
                            probes[actors[a].pid.remote()] = (a, give_up)
                            continue
                        except LOST_WORKER_ERRORS as exc:  # dead for good
                            self._give_up(actors, a, type(exc).__name__)
                            continue
                        up[a] = True
                        log.info("%s worker %d is back", self.what, a)
                        continue
                    spec, a = pending.pop(ref)
                    load[a] -= 1
                    try:
                        record = ray.get(ref)
                    except RayTaskError as exc:
                        cause = exc.cause if hasattr(exc, "cause") else None
                        if isinstance(cause, HpcinvError):
                            raise HpcinvError(str(cause)) from None
                        if isinstance(cause, LOST_WORKER_ERRORS) or isinstance(exc, LOST_WORKER_ERRORS):
                            delayed.append(self._retry(spec, exc, attempts))
                            self._probe(actors, a, up, probes)
                            continue
                        raise
                    except LOST_WORKER_ERRORS as exc:
                        delayed.append(self._retry(spec, exc, attempts))
                        self._probe(actors, a, up, probes)
                        continue
                    self.per_worker_samples[a] = self.per_worker_samples.get(a, 0) + spec.size
                    yield record
        finally:
            for actor in actors:
                ray.kill(actor)
            # until the killed actors are gone (their tasks resolve): the caller may then clean up after them
            if pending:
                ray.wait(list(pending), num_returns=len(pending), timeout=KILL_WAIT_S)

    @staticmethod
    def _probe(actors: list, a: int, up: list[bool], probes: dict) -> None:
        """Actor ``a`` lost a task: no more work for it until it answers (restarted by Ray)."""
        if up[a]:
            up[a] = False
            probes[actors[a].pid.remote()] = (a, time.monotonic() + RESTART_WAIT_S)

    def _give_up(self, actors: list, a: int, why: str) -> None:
        self.lost_workers += 1
        log.warning("%s worker %d given up (%s); going on with the others", self.what, a, why)
        ray.kill(actors[a], no_restart=True)

    def _retry(self, spec: ShardSpec, exc: Exception, attempts: dict) -> tuple[float, ShardSpec]:
        """Count a lost-worker failure of ``spec``; when to resubmit it (exponential back-off, so a
        restarting actor has time to come back)."""
        attempts[spec.shard_id] = attempts.get(spec.shard_id, 0) + 1
        n = attempts[spec.shard_id]
        if n > self.max_retries:
            raise HpcinvError(f"{spec.name} failed {n} times; last error: {exc}") from None
        self.retries += 1
        delay = RETRY_BASE_S * 2 ** (n - 1)
        log.warning(
            "%s worker lost while computing %s (%s); retrying in %.0f s",
            self.what,
            spec.name,
            type(exc).__name__,
            delay,
        )
        return time.monotonic() + delay, spec

    def summary(self, wall_s: float) -> dict:
        """How the run went, for a stage's summary."""
        return {
            "workers": self.workers,
            "failures_retried": self.retries,
            "workers_lost": self.lost_workers,
            "actor_startup_s": self.startup_s,
            "samples_per_s_per_worker": {
                str(k): round(v / wall_s, 3) if wall_s > 0 else 0.0 for k, v in sorted(self.per_worker_samples.items())
            },
        }


def init_error(exc: RayActorError) -> str:
    """The message of the error an actor's constructor raised (hpcinv's own errors by their one line, e.g.
    a GPU preflight; anything else by the traceback's last line), from Ray's report of it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("hpcinv.errors.")]
    last = ours[-1] if ours else lines[-1] if lines else type(exc).__name__
    return last.split(": ", 1)[1] if ours and ": " in last else last
