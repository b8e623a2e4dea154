"""The ``generate`` stage: a dataset's shards modelled in this process or by the Ray actors of one
:class:`~hpcinv.distributed.pool.ShardPool`, recorded in its manifest (resumable, locked).

Everything that can be checked (the config's physics, the output folder) is checked before the folder
is touched, and before a Ray cluster is joined; then the folder's lock is held until the end
(exclusively, or shared by the parts of an array job).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from hpcinv.generate.driver import (
    Plan,
    Summary,
    check_dataset_config,
    check_device,
    check_part,
    check_workers,
    execute,
    in_process_executor,
    prepare,
)
from hpcinv.generate.worker import shard_worker
from hpcinv.stages.base import Execution
from hpcinv.stages.requests import GenerateRequest
from hpcinv.store import folder_lock, verify_dataset
from hpcinv.store.folder import check_dataset_folder
from hpcinv.velocity import CollectionSource


def check(req: GenerateRequest, execution: Execution | None = None) -> None:
    """Everything checkable before anything is written (``python -m launch.generate`` runs it too)."""
    check_part(req.part)
    check_workers(execution.workers if execution else None)
    check_dataset_config(req.config)
    check_dataset_folder(req.config, req.out, restart=req.restart)


def run(req: GenerateRequest, execution: Execution) -> dict:
    """Generate (or finish) the dataset of ``req`` in its folder: in this process with
    ``execution.in_process``, else on Ray actors (joining ``execution.address`` or ``RAY_ADDRESS``, else
    a local Ray instance sized to the machine)."""
    cfg, out, part = req.config, Path(req.out), req.part
    check_part(part)
    check_workers(execution.workers)
    validated = check_dataset_config(cfg)
    discard, manifest = check_dataset_folder(cfg, out, restart=req.restart)
    full = req.verify == "full"
    if execution.in_process:
        check_device(cfg)
        with folder_lock(out, shared=part is not None):
            plan = prepare(cfg, out, restart=req.restart, validated=validated, part=part, full=full)
            return asdict(execute(plan, in_process_executor(plan), progress=execution.progress))
    if manifest is not None and manifest["complete"] and not discard and part is None:
        # complete already: checked without starting a cluster (a stat per shard; --verify full: its sha256)
        with folder_lock(out):
            t0 = time.perf_counter()
            if verify_dataset(out, checksums=full, trust_unchanged=not full).ok:
                n = len(manifest["shards"])
                return asdict(
                    Summary(str(out), manifest["n_samples"], n, 0, n, round(time.perf_counter() - t0, 3), 0.0)
                )

    from hpcinv.distributed.pool import place
    from hpcinv.distributed.session import init_ray

    init_ray(execution.address)  # before anything is written: an unreachable cluster leaves no trace
    placement = place(cfg.modelling.device, cfg.modelling.threads, execution.workers, "modelling.device")
    with folder_lock(out, shared=part is not None):
        plan = prepare(cfg, out, restart=req.restart, validated=validated, part=part, full=full)
        pool = modelling_pool(plan, placement)
        summary = execute(plan, pool, progress=execution.progress)
    summary.extra |= pool.summary(summary.wall_s)
    return asdict(summary)


def modelling_pool(plan: Plan, placement):
    """The pool of modelling actors for ``plan``'s shards. On a GPU an actor takes two shards at once (one
    modelled while the other is written, so the device does not wait for the host work); a CPU actor one:
    there its host work is 0.5 % of the modelling, and two concurrent shards made a one-thread actor 4-8 %
    slower (docs/SCALING.md). An imported collection travels once per node through the object store."""
    from hpcinv.distributed.pool import ShardPool

    # the actors get the device decided here, never "auto" (not part of the dataset's hash)
    cfg = plan.cfg.model_copy(update={"modelling": plan.cfg.modelling.model_copy(update={"device": placement.device})})
    shared = {"collection": plan.source.raw} if isinstance(plan.source, CollectionSource) else {}
    return ShardPool(
        placement,
        shard_worker,
        {"cfg_json": cfg.model_dump_json(), "out_dir": str(plan.out)},
        what="modelling",
        threads=cfg.modelling.threads,
        shared=shared,
        in_flight=2 if placement.device == "cuda" else 1,
    )
