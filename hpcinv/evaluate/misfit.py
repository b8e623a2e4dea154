"""Physics consistency: re-simulate a predicted velocity model with the dataset's own survey and
compare the modelled gathers with the recorded ones.

    misfit = ‖d(v_pred) − d_obs‖₂ / ‖d_obs‖₂   over all shots, samples and receivers

The true model gives 0 (modelling is deterministic); a network whose velocity explains the data
gives a small misfit even where it differs from the truth in places the survey cannot see.
Predicted velocities are clipped to [1, max_vel_mps] first so the pinned time step stays stable.
"""

from __future__ import annotations

import numpy as np
import torch

from hpcinv.config import DataConfig
from hpcinv.errors import HpcinvError
from hpcinv.physics import simulate_config
from hpcinv.physics.forward import resolve_device


def data_misfit(vel_ZX: np.ndarray, gathers_STR: np.ndarray, cfg: DataConfig) -> float:
    """The relative misfit of one model's re-simulated gathers, modelled here on the GPU if there is one
    (not where the dataset's ``modelling.device`` says: a dataset made on GPUs is scored anywhere)."""
    vel = np.clip(np.asarray(vel_ZX, dtype=np.float32), 1.0, cfg.modelling.max_vel_mps)
    device = resolve_device("auto")
    modelled = simulate_config(vel, cfg, dtype=torch.float64, device=device).cpu().numpy()
    observed = np.asarray(gathers_STR, dtype=np.float64)
    norm = float(np.linalg.norm(observed))
    if norm == 0:
        raise HpcinvError("the recorded gathers of a sample are all zeros: no data misfit can be measured against them")
    return float(np.linalg.norm(modelled - observed) / norm)
