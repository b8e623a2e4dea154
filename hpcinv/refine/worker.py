"""The unit of refine work: FWI of every model of one output shard, written atomically.

Used in-process and inside Ray actors (:class:`hpcinv.distributed.pool.ShardPool`); no distributed code here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from hpcinv.config import RefineSection
from hpcinv.errors import HpcinvError
from hpcinv.metrics import velocity_metrics
from hpcinv.physics.forward import resolve_device
from hpcinv.refine.fwi import refine_model
from hpcinv.store import ShardedDataset, ShardSpec, load_dataset_config
from hpcinv.store.shard import SHARD_DIR
from hpcinv.store.velocities import VelocityStore, write_velocity_shard

SCORES = ("mae", "rmse", "ssim")


def velocity_scores(model_ZX: np.ndarray, true_ZX: np.ndarray, v_range: tuple[float, float]) -> dict:
    """MAE, RMSE (m/s) and SSIM (on ``v_range``) of one model, as evaluate defines them."""
    model, true = (torch.tensor(np.asarray(a, np.float32))[None, None] for a in (model_ZX, true_ZX))  # copies
    got = velocity_metrics(model, true, *v_range)
    return {k: float(got[k][0]) for k in SCORES}


class RefineWorker:
    """Refines the models of output shards: one per process."""

    def __init__(
        self,
        dataset: str | os.PathLike,
        out: str | os.PathLike,
        rc: RefineSection,
        bounds: tuple[float, float],
        lo: int,
        store_hash: str,
        *,
        start_store: str | None = None,
        start_model: np.ndarray | None = None,
        score_range: tuple[float, float] | None = None,
    ):
        """The start is a velocity store (``start_store``) or one model for every sample (``start_model``).
        The process that runs it sets ``refine.threads`` (the actor for good, the in-process executor for
        its run)."""
        self.ds = ShardedDataset(dataset)
        self.cfg = load_dataset_config(dataset)
        self.folder = Path(out) / SHARD_DIR
        self.rc, self.bounds, self.lo, self.hash = rc, bounds, lo, store_hash
        self.start_store = VelocityStore(start_store) if start_store else None
        self.start_model = start_model
        self.score_range = score_range
        self.device = resolve_device(rc.device, "refine.device")
        if self.device.type == "cuda":
            from hpcinv.doctor import require_gpu_ready

            require_gpu_ready(f"refine.device={rc.device}", self.device, probe=True)
        self.iterations = sum(rc.iterations_per_band)

    def starts(self, lo: int, hi: int) -> np.ndarray:
        if self.start_store is not None:
            return self.start_store.read_range(lo, hi)[1]
        assert self.start_model is not None  # the start is a store or one model
        return np.broadcast_to(self.start_model, (hi - lo, *self.start_model.shape))

    def run(self, spec: ShardSpec) -> dict:
        lo, hi = self.lo + spec.start, self.lo + spec.stop
        starts = self.starts(lo, hi)
        refined, history, samples = [], np.full((spec.size, max(self.iterations, 1)), np.nan, np.float32), []
        for row, index in enumerate(range(lo, hi)):
            gathers, truth = self.ds.read(index)
            try:
                result = refine_model(
                    starts[row], gathers, self.cfg, self.rc, self.bounds, seed=self.rc.seed + index, device=self.device
                )
            except HpcinvError as exc:
                raise HpcinvError(f"refine of sample {index}: {exc}") from None
            refined.append(result.velocity)
            history[row, : len(result.history)] = result.history
            summary = {"index": index, **result.summary()}
            if truth is not None and self.score_range is not None:
                summary["before"] = velocity_scores(np.asarray(starts[row], np.float32), truth, self.score_range)
                summary["after"] = velocity_scores(result.velocity, truth, self.score_range)
            samples.append(summary)
        return write_velocity_shard(
            self.folder,
            spec,
            self.lo,
            np.stack(refined),
            config_hash=self.hash,
            extra={"misfit_history": history},
            samples=samples,
        )
