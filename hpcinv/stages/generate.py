"""``generate()``: the one entry that runs a dataset's generation in this process or on Ray actors.

It sits above :mod:`hpcinv.generate.driver` (planning, the manifest, the in-process executor) and
:mod:`hpcinv.generate.distributed` (the Ray actors, which need the driver's :class:`Plan`), so
neither of those imports the other's caller.
"""

from __future__ import annotations

import time
from pathlib import Path

from hpcinv.config import DataConfig
from hpcinv.generate.driver import (
    Summary,
    check_dataset_config,
    check_device,
    check_part,
    check_workers,
    execute,
    in_process_executor,
    prepare,
)
from hpcinv.store.folder import check_dataset_folder
from hpcinv.store.lock import folder_lock
from hpcinv.store.manifest import verify_dataset


def generate(
    cfg: DataConfig,
    out: str | Path,
    *,
    restart: bool = False,
    progress: bool = True,
    use_ray: bool = False,
    address: str | None = None,
    workers: int | None = None,
    part: tuple[int, int] | None = None,
) -> Summary:
    """Generate (or finish) the dataset of ``cfg`` in ``out`` (only ``part=(i, k)`` of its shards if given).

    In this process by default; with ``use_ray`` on Ray actors — joining ``address`` (or
    ``RAY_ADDRESS``), else a local Ray instance sized to the machine. Everything that can be checked
    is checked before the folder is touched; then the folder's lock is held until the end.
    """
    check_part(part)
    check_workers(workers)
    validated = check_dataset_config(cfg)
    discard, manifest = check_dataset_folder(cfg, out, restart=restart)
    if not use_ray:
        check_device(cfg)
        with folder_lock(out, shared=part is not None):
            plan = prepare(cfg, out, restart=restart, validated=validated, part=part)
            return execute(plan, in_process_executor(plan), progress=progress)
    if manifest is not None and manifest["complete"] and not discard and part is None:
        # complete already: checked (every shard's size and sha256, reading only) without starting a cluster
        with folder_lock(out):
            t0 = time.perf_counter()
            if verify_dataset(out).ok:
                wall = round(time.perf_counter() - t0, 3)
                n = len(manifest["shards"])
                return Summary(str(out), manifest["n_samples"], n, 0, n, wall, 0.0)

    from hpcinv.generate.distributed import init_ray, placement, ray_executor

    init_ray(address)  # before anything is written: an unreachable cluster leaves no trace
    placement(cfg, workers)  # nor does a cluster that cannot hold the actors
    with folder_lock(out, shared=part is not None):
        plan = prepare(cfg, out, restart=restart, validated=validated, part=part)
        stats: dict = {}
        summary = execute(plan, ray_executor(plan, workers=workers, stats=stats), progress=progress)
    per_worker = stats.get("per_worker_samples", {})
    summary.extra |= {
        "workers": stats.get("workers", 0),
        "failures_retried": stats.get("retries", 0),
        "actor_startup_s": stats.get("startup_s", 0.0),
        "samples_per_s_per_worker": {str(k): round(v / summary.wall_s, 3) for k, v in sorted(per_worker.items())},
    }
    return summary
