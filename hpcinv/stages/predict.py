"""The ``predict`` stage: a trained network's velocity model for every sample of a dataset, as a velocity
store (:mod:`hpcinv.predict`), in this process -- or, given ``--workers`` or ``--address``, by the Ray
actors of one :class:`~hpcinv.distributed.pool.ShardPool` (one per core, or per GPU with
``--device cuda``), each holding the network once.

The dataset is held with a shared lock from the first check to the last shard; the checkpoint is read
once, whole, before anything is written.
"""

from __future__ import annotations

from hpcinv.physics.forward import resolve_device
from hpcinv.predict import PredictPlan, plan_predict, predict_worker, run_predict
from hpcinv.stages.base import Execution
from hpcinv.stages.requests import PredictRequest
from hpcinv.store import folder_lock


def check(req: PredictRequest, execution: Execution | None = None) -> PredictPlan:
    """Everything checkable before anything is written."""
    return plan_predict(req.run, req.data, req.out, req.settings, restart=req.restart)


def uses_ray(execution: Execution) -> bool:
    """Prediction is cheap next to modelling: Ray only when asked for (``--workers`` / ``--address``)."""
    return not execution.in_process and (execution.address is not None or execution.workers is not None)


def run(req: PredictRequest, execution: Execution) -> dict:
    """Write (or finish) the store of ``req``."""
    with folder_lock(req.data, shared=True, create=False):  # read from the first check to the last shard
        plan = check(req, execution)
        if not uses_ray(execution):
            device = resolve_device(req.settings.device, "device").type
            return run_predict(plan, progress=execution.progress, device=device)
        from hpcinv.distributed.pool import ShardPool, place
        from hpcinv.distributed.session import init_ray

        init_ray(execution.address)
        placement = place(req.settings.device, 1, execution.workers, "--device")
        pool = ShardPool(
            placement,
            predict_worker,
            plan.worker_args(placement.device),
            what="prediction",
            shared={"state": plan.network.state},  # the network, once per node
        )
        summary = run_predict(plan, progress=execution.progress, executor=pool)
        return summary | {"workers": pool.workers, "failures_retried": pool.retries, "workers_lost": pool.lost_workers}
