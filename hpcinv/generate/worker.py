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
from hpcinv.physics.survey import n_output_samples, peak_time_s
from hpcinv.store.shard import SHARD_DIR, ShardSpec, write_shard
from hpcinv.store.stats import RunningStats
from hpcinv.velocity import VelocitySource, make_source


def survey_attrs(cfg: DataConfig) -> dict:
    """Everything a reader needs to interpret the gathers, stored in every shard and the manifest."""
    s, g, m = cfg.survey, cfg.grid, cfg.modelling
    geometry = make_geometry(s, g)
    return {
        "nz": g.nz,
        "nx": g.nx,
        "dx_m": g.dx_m,
        "n_shots": geometry.n_shots,
        "n_receivers": geometry.n_receivers,
        "source_cells_zx": geometry.source_cells.tolist(),
        "receiver_cells_zx": geometry.receiver_cells.tolist(),
        "f0_hz": s.f0_hz,
        "peak_time_s": peak_time_s(s),
        "wavelet": "ricker",
        "simulation_dt_s": s.dt_s,
        "simulation_nt": s.nt,
        "downsample": s.downsample,
        "dt_s": s.dt_s * s.downsample,
        "nt": n_output_samples(s),
        "accuracy": m.accuracy,
        "pml_width": m.pml_width,
        "pml_freq_hz": m.pml_freq_hz or s.f0_hz,
        "max_vel_mps": m.max_vel_mps,
    }


class ShardWorker:
    """Models and writes shards of one dataset; one per process, one torch thread by default."""

    def __init__(self, cfg: DataConfig, out_dir: str | os.PathLike, source: VelocitySource | None = None):
        torch.set_num_threads(cfg.modelling.threads)
        if cfg.modelling.device == "cuda":
            from hpcinv.doctor import require_gpu_ready

            require_gpu_ready("modelling.device=cuda")
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

    def model(self, spec: ShardSpec) -> tuple[np.ndarray, np.ndarray, RunningStats]:
        """Velocities, gathers (host, stored dtype) and the gathers' statistics of one shard. Holds the
        device for the modelling only: the statistics are reduced where the gathers are (on the GPU)."""
        vel_NZX = self.models(spec)
        with self.device_lock:
            gathers = simulate(
                vel_NZX,
                self.cfg.survey,
                self.cfg.grid,
                self.cfg.modelling,
                dtype=self.gathers_dtype,
                geometry=self.geometry,
            )
            stats = RunningStats.of(gathers)
            host = gathers.cpu().numpy()
        return vel_NZX, host, stats

    def run(self, spec: ShardSpec) -> dict:
        """Model samples [spec.start, spec.stop) and write them as one shard; return its record.

        Two calls may run at once on two threads (the modelling actor allows it): one models while the
        other writes, fsyncs and hashes its shard, so the device does not wait for the host work."""
        return self.write(spec, *self.model(spec))

    def write(self, spec: ShardSpec, vel_NZX: np.ndarray, gathers: np.ndarray, stats: RunningStats) -> dict:
        """Write a modelled shard atomically (HDF5 image, fsync, rename, sha256 of the image); its record."""
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
