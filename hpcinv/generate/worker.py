"""The unit of generation work: model one shard and write it. Used in-process and by Ray actors.

A :class:`ShardWorker` is built once per process (it may hold an imported collection in memory)
and then turns :class:`~hpcinv.store.ShardSpec` s into shard files, returning small records
(path, checksum, statistics) — never the arrays themselves.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from hpcinv.config import DataConfig, config_hash
from hpcinv.physics import make_geometry, simulate
from hpcinv.physics.forward import resolve_device
from hpcinv.store.schema import survey_attrs
from hpcinv.store.shard import SHARD_DIR, ShardSpec, write_shard
from hpcinv.store.stats import RunningStats
from hpcinv.velocity import CollectionSource, SyntheticSource, VelocitySource, make_source


class ShardWorker:
    """Models and writes shards of one dataset; one per process, on ``modelling.threads`` torch threads
    (set by the process that runs it: the actor for good, the in-process executor for its run)."""

    def __init__(self, cfg: DataConfig, out_dir: str | os.PathLike, source: VelocitySource | None = None):
        if resolve_device(cfg.modelling.device).type == "cuda":  # "auto" on a GPU too
            from hpcinv.doctor import require_gpu_ready

            require_gpu_ready(f"modelling.device={cfg.modelling.device}", probe=True)  # the GPU this process uses
        self.cfg = cfg
        self.folder = Path(out_dir) / SHARD_DIR
        self.source = source or make_source(cfg)
        self.geometry = make_geometry(cfg.survey, cfg.grid)
        self.hash = config_hash(cfg)
        self.attrs = survey_attrs(cfg)
        self.gathers_dtype = getattr(torch, cfg.dataset.gathers_dtype)
        self.device_lock = threading.Lock()  # one shard modelled at a time; another may be written meanwhile

    def models(self, spec: ShardSpec) -> np.ndarray:
        return self.source.models(spec.start, spec.stop)

    def model(self, spec: ShardSpec) -> tuple[np.ndarray, np.ndarray, RunningStats | None]:
        """Velocities, gathers (host, stored dtype) and, when modelled on a GPU, the gathers' statistics
        of one shard. Holds the device for the modelling only. The statistics are reduced where the
        gathers are: on a GPU there, before the copy; on a CPU by :meth:`write`, which runs on another
        thread while the next shard is modelled (here they would cost the modelling core 0.03 s per
        paper-size sample)."""
        vel_NZX = self.models(spec)
        with self.device_lock:
            gathers = simulate(
                vel_NZX,
                self.cfg.survey,
                self.cfg.grid,
                self.cfg.modelling,
                dtype=self.gathers_dtype,
                geometry=self.geometry,
                conditioning=self.cfg.conditioning,
            )
            stats = RunningStats.of(gathers) if gathers.device.type != "cpu" else None
            host = gathers.cpu().numpy()
        return vel_NZX, host, stats

    def run(self, spec: ShardSpec) -> dict:
        """Model samples [spec.start, spec.stop) and write them as one shard; return its record.

        Two calls may run at once on two threads (the modelling actor allows it): one models while the
        other writes, fsyncs and hashes its shard, so the device does not wait for the host work."""
        return self.write(spec, *self.model(spec))

    def write(
        self, spec: ShardSpec, vel_NZX: np.ndarray, gathers: np.ndarray, stats: RunningStats | None = None
    ) -> dict:
        """Write a modelled shard atomically (HDF5 image, fsync, rename, sha256 of the image); its record.
        ``stats``: the gathers' statistics when :meth:`model` reduced them on the device."""
        if stats is None:
            stats = RunningStats.of(torch.from_numpy(gathers))
        return write_shard(
            self.folder,
            spec,
            vel_NZX,
            gathers,
            config_hash=self.hash,
            survey=self.attrs,
            gathers_dtype=self.cfg.dataset.gathers_dtype,
            gathers_stats=stats,
        )


def shard_worker(cfg_json: str, out_dir: str, collection: np.ndarray | None = None) -> ShardWorker:
    """A :class:`ShardWorker` of the dataset ``cfg_json`` (a validated DataConfig as JSON), built where it
    runs (a modelling actor): from an imported ``collection`` of models, or the synthetic generator."""
    cfg = DataConfig.model_validate_json(cfg_json)
    n = cfg.dataset.n_samples
    source: VelocitySource
    if collection is not None:
        source = CollectionSource(cfg, n, raw=collection)
    else:
        assert n is not None  # synthetic: make_source refused n_samples=null in the driver
        source = SyntheticSource(cfg, n)
    return ShardWorker(cfg, out_dir, source=source)
