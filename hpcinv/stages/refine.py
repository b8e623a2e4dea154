"""The ``refine`` stage: full-waveform inversion of every model of a dataset from a start (a network's
predictions, a velocity store, a smooth model), in this process or by the Ray actors of one
:class:`~hpcinv.distributed.pool.ShardPool` (one per core with ``refine.threads``, or per GPU).

Everything that can be refused is refused before anything is written (:func:`hpcinv.refine.driver.plan_refine`,
also run by ``python -m launch.refine``); what refine reads is held with a shared lock from its first
check to its last shard, its output and its own start exclusively.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from hpcinv.folders import START
from hpcinv.refine.driver import RefinePlan, in_process_executor, inputs_held, plan_refine, run_refine, worker_args
from hpcinv.refine.worker import RefineWorker
from hpcinv.stages.base import Execution
from hpcinv.stages.requests import RefineRequest
from hpcinv.store import folder_lock


def check(req: RefineRequest, execution: Execution | None = None, *, predict_start: bool = True) -> RefinePlan:
    """Everything checkable before anything is written (the launcher leaves the network's predictions,
    and their check against the bounds, to the job: ``predict_start=False``)."""
    return plan_refine(
        req.data,
        req.init,
        req.out,
        req.config,
        split=req.split,
        restart=req.restart,
        allow_survey_mismatch=req.allow_survey_mismatch,
        samples=req.samples,
        workers=execution.workers if execution else None,
        predict_start=predict_start,
    )


def run(req: RefineRequest, execution: Execution) -> dict:
    """Refine every model of ``req`` into its store (resumed, or --restarted)."""
    t0 = time.perf_counter()
    out, rc = Path(req.out), req.config.refine
    with contextlib.ExitStack() as held:
        # what refine reads is held from its first check to its last shard: nothing can pull it away
        for folder, what in inputs_held(req.data, req.init, req.config):
            held.enter_context(folder_lock(folder, shared=True, create=False, what=what))
        plan = check(req, execution)
        pool = None
        if execution.in_process:
            executor = in_process_executor(plan)
        else:
            from hpcinv.distributed.pool import ShardPool, place
            from hpcinv.distributed.session import init_ray

            init_ray(execution.address)  # before anything is written
            placement = place(rc.device, rc.threads, execution.workers, "refine.device")
            pool = ShardPool(
                placement, RefineWorker, worker_args(plan, placement.device), what="refine", threads=rc.threads
            )
            executor = pool
        held.enter_context(folder_lock(out, what="refine output"))
        # its start too (a --restart discards it; nobody else may hold it then), if there is one
        held.enter_context(folder_lock(out / START, what="refine start", create=False))
        summary, writer = run_refine(plan, executor, progress=execution.progress, figures=req.figures)
    return summary | {
        "computed_shards": len(writer.todo),
        "skipped_shards": writer.skipped,
        "wall_s": round(time.perf_counter() - t0, 3),
        "workers": pool.workers if pool is not None else (1 if writer.todo else 0),
        "failures_retried": pool.retries if pool is not None else 0,
        "workers_lost": pool.lost_workers if pool is not None else 0,
    }
