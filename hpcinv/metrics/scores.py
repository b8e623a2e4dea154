"""Velocity-model metrics, per sample, on physical units.

For a prediction p and a truth t in m/s over an nz × nx model, with the dataset's velocity range
[v_min, v_max] (R = v_max − v_min):

* ``mse`` = mean((p − t)²) in (m/s)²; ``rmse`` = √mse in m/s; ``mae`` = mean(|p − t|) in m/s;
* ``mae_pm1`` / ``rmse_pm1`` — the same on OpenFWI's [−1, 1] scale (errors × 2 / R);
* ``ssim`` — torchmetrics' SSIM (Gaussian window 11, σ 1.5, K1 0.01, K2 0.03) on velocities mapped
  to [0, 1] by (v − v_min) / R, with data range 1;
* ``psnr`` — peak-based: 10·log10(R² / mse) dB;
* ``psnr_signal`` — FCNVMB's variant, named as such: 10·log10(mean(t²) / mse) dB (signal power
  instead of peak).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

METRICS = ("mse", "rmse", "mae", "mae_pm1", "rmse_pm1", "ssim", "psnr", "psnr_signal")


def velocity_metrics(pred_B1ZX: torch.Tensor, true_B1ZX: torch.Tensor, v_min: float, v_max: float) -> dict:
    """Per-sample metrics (each a tensor of shape (B,)), inputs in m/s."""
    pred = pred_B1ZX.detach().double()
    true = true_B1ZX.detach().double()
    span = float(v_max - v_min)
    err = pred - true
    mse = err.pow(2).mean(dim=(1, 2, 3))
    mae = err.abs().mean(dim=(1, 2, 3))
    scale = lambda v: ((v - v_min) / span).clamp(0, 1)  # noqa: E731
    # float32 on a CPU; float64 on a GPU, where float32 convolutions may run in TF32, whose rounding moves
    # SSIM's E[x^2] - E[x]^2 by up to ~0.03 (GPU ranks and CPU evaluation would disagree). Not float64
    # everywhere: a CPU convolves it 10-20 x slower (1.4-3.4 s against 0.15 s for 8 paper-size models)
    dtype = torch.float64 if pred.device.type == "cuda" else torch.float32
    ssim = structural_similarity_index_measure(
        scale(pred).to(dtype), scale(true).to(dtype), data_range=1.0, reduction="none"
    )
    assert isinstance(ssim, torch.Tensor)  # a tuple only with return_full_image / return_contrast_sensitivity
    tiny = torch.finfo(torch.float64).tiny
    return {
        "mse": mse,
        "rmse": mse.sqrt(),
        "mae": mae,
        "mae_pm1": mae * 2 / span,
        "rmse_pm1": mse.sqrt() * 2 / span,
        "ssim": ssim.double(),
        "psnr": 10 * torch.log10(span**2 / mse.clamp_min(tiny)),
        "psnr_signal": 10 * torch.log10(true.pow(2).mean(dim=(1, 2, 3)) / mse.clamp_min(tiny)),
    }


def spread(models_NZX: np.ndarray) -> float:
    """RMS deviation (m/s) of a set of models from their mean model: how much they differ from one
    another. A network whose predictions hardly depend on its input has a spread far below the true
    models' spread."""
    m = np.asarray(models_NZX, dtype=np.float64)
    return float(np.sqrt(np.mean((m - m.mean(axis=0)) ** 2)))
