"""Full-waveform inversion of one velocity model with deepwave (pure torch; no distributed code).

:func:`refine_model` starts from a velocity model (a network's prediction, or a smooth model) and
lowers the misfit between the gathers it models and the recorded ones:

* the modelled gathers use the dataset's own survey, wavelet, stencil, PML and pinned ``max_vel``, and
  the same time downsampling as the stored gathers, so the true model has a misfit of 0;
* **frequency continuation**: both the modelled and the recorded gathers are low-passed (a zero-phase
  Butterworth response applied in the frequency domain) with cut-offs ``bands_hz`` from low to high, the
  last usually ``null`` (the full band); low frequencies first keep a model that is close to the truth
  within half a period of the data, which is what avoids cycle skipping;
* Adam over the velocity in m/s (a step of about ``lr_mps`` per cell), cosine-decayed within each band,
  with the velocity projected onto ``[v_min, v_max]`` after every step (it never leaves the bounds);
* optional Gaussian smoothing of the gradient (``smooth_gradient_cells``) and total-variation
  regularisation (``tv_weight``, which keeps salt blocky and sediments smooth);
* random shot mini-batches (``shots_per_iteration``), drawn from a seeded generator so a rerun is
  identical;
* stopping: a band ends early when its misfit has not fallen by ``min_improvement`` (relative) over
  ``patience`` iterations; the whole run ends when the full-band misfit reaches ``target_misfit``;
* a safeguard: the full-band misfit over all shots is measured at the start and after every band,
  and the model with the lowest one is returned, so refine never returns a model that explains the
  data worse than its start (``kept_start`` says when the start was kept);
* reported: the misfit of every shot before and after, each band's band-limited misfit at its start
  and end, and, with ``holdout_shots``, the misfit of shots left out of the fit (never used to fit or
  to choose the model returned: "all shots" above means the fitted ones), which says whether the
  model predicts data it was not fitted to.

Misfits are relative L2 norms over all shots, samples and receivers: ``‖d(v) − d_obs‖ / ‖d_obs‖``,
the definition :mod:`hpcinv.evaluate.misfit` uses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from hpcinv.config import DataConfig, RefineSection
from hpcinv.errors import HpcinvError
from hpcinv.physics.forward import model_shots
from hpcinv.physics.survey import make_geometry, source_wavelet

BUTTERWORTH_ORDER = 8


@dataclass
class FwiResult:
    velocity: np.ndarray  # (nz, nx) float32, m/s
    misfit_before: float  # full band, all shots
    misfit_after: float
    history: list[float] = field(default_factory=list)  # per iteration: the band's misfit on the shots used
    band_ends: list[int] = field(default_factory=list)  # iterations done when each band ended
    band_misfits: list[float] = field(default_factory=list)  # full-band misfit after each band
    stopped: str = "budget"  # budget | target | start_fits
    kept_start: bool = False
    clipped_cells: int = 0
    wall_s: float = 0.0
    shot_misfits_before: list[float] = field(default_factory=list)  # full band, every shot
    shot_misfits_after: list[float] = field(default_factory=list)
    bands: list[dict] = field(default_factory=list)  # per band: its cut-off and band-limited misfits
    holdout_shots: list[int] = field(default_factory=list)
    holdout_before: float = math.nan  # full band over the held-out shots
    holdout_after: float = math.nan

    def summary(self) -> dict:
        out = {
            "misfit_before": self.misfit_before,
            "misfit_after": self.misfit_after,
            "iterations": len(self.history),
            "band_ends": self.band_ends,
            "band_misfits": self.band_misfits,
            "stopped": self.stopped,
            "kept_start": self.kept_start,
            "clipped_cells": self.clipped_cells,
            "wall_s": round(self.wall_s, 3),
            "shot_misfits_before": self.shot_misfits_before,
            "shot_misfits_after": self.shot_misfits_after,
            "bands": self.bands,
        }
        if self.holdout_shots:
            out |= {
                "holdout_shots": self.holdout_shots,
                "holdout_misfit_before": self.holdout_before,
                "holdout_misfit_after": self.holdout_after,
            }
        return out


def lowpass(data: torch.Tensor, cutoff_hz: float | None, dt_s: float) -> torch.Tensor:
    """Zero-phase low-pass of ``data`` (…, time, receivers) along time: a Butterworth magnitude
    response of order 8 applied in the frequency domain, with the record zero-padded to twice its
    length so nothing wraps around. ``None``: the data unchanged."""
    if cutoff_hz is None:
        return data
    nt = data.shape[-2]
    n = 2 * nt
    freqs = torch.fft.rfftfreq(n, dt_s, dtype=data.dtype, device=data.device)
    response = 1.0 / torch.sqrt(1.0 + (freqs / cutoff_hz) ** (2 * BUTTERWORTH_ORDER))
    spectrum = torch.fft.rfft(data, n=n, dim=-2) * response[:, None]
    return torch.fft.irfft(spectrum, n=n, dim=-2)[..., :nt, :]


def relative_misfit(modelled: torch.Tensor, observed: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(modelled - observed) / torch.linalg.vector_norm(observed))


def shot_misfits(modelled_STR: torch.Tensor, observed_STR: torch.Tensor) -> list[float]:
    """The relative misfit of each shot."""
    residual = torch.linalg.vector_norm((modelled_STR - observed_STR).flatten(1), dim=1)
    return (residual / torch.linalg.vector_norm(observed_STR.flatten(1), dim=1)).tolist()


def total_variation(v_ZX: torch.Tensor) -> torch.Tensor:
    """Mean isotropic total variation of a model in km/s per cell (smoothed at 1 m/s)."""
    v = v_ZX / 1000.0
    dz = v[1:, :-1] - v[:-1, :-1]
    dx = v[:-1, 1:] - v[:-1, :-1]
    return torch.sqrt(dz * dz + dx * dx + 1e-6).mean()


def gaussian_smooth(x_ZX: torch.Tensor, sigma_cells: float) -> torch.Tensor:
    """Separable Gaussian blur with reflecting edges."""
    radius = max(1, int(math.ceil(3 * sigma_cells)))
    t = torch.arange(-radius, radius + 1, dtype=x_ZX.dtype, device=x_ZX.device)
    kernel = torch.exp(-0.5 * (t / sigma_cells) ** 2)
    kernel = (kernel / kernel.sum())[None, None]
    x = x_ZX[None, None]
    for dim in (2, 3):
        pad = (0, 0, radius, radius) if dim == 2 else (radius, radius, 0, 0)
        k = kernel[..., :, None] if dim == 2 else kernel[..., None, :]
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, pad, mode="reflect"), k)
    return x[0, 0]


def refine_model(
    start_ZX: np.ndarray,
    observed_STR: np.ndarray,
    cfg: DataConfig,
    rc: RefineSection,
    v_bounds: tuple[float, float],
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FwiResult:
    """FWI of one model from ``start_ZX`` (m/s) against ``observed_STR`` (the stored gathers of the
    dataset ``cfg``), with the velocity kept within ``v_bounds`` (m/s), all shots of an iteration
    in one deepwave call on ``device``."""
    t0 = time.perf_counter()
    v_min, v_max = v_bounds
    start = torch.tensor(np.asarray(start_ZX, dtype=np.float32)).to(device)
    clipped = int(((start < v_min) | (start > v_max)).sum())
    v = start.clamp(v_min, v_max).clone().requires_grad_(True)
    observed = torch.tensor(np.asarray(observed_STR, dtype=np.float32)).to(device)
    if not bool(torch.isfinite(observed).all()) or not float(torch.linalg.vector_norm(observed)) > 0:
        raise HpcinvError("its recorded gathers are all zeros or not finite: there is nothing to fit")
    geometry = make_geometry(cfg.survey, cfg.grid)
    wavelet = source_wavelet(cfg.survey).to(device)
    n_shots = geometry.n_shots
    held = sorted(rc.holdout_shots)
    fit = torch.tensor([s for s in range(n_shots) if s not in held], dtype=torch.long)
    dt_out = cfg.survey.dt_s * cfg.survey.downsample
    generator = torch.Generator().manual_seed(seed)

    def measure(model: torch.Tensor) -> tuple[torch.Tensor, float, list[float], float]:
        """The model's gathers of every shot, and their full-band misfit over the fitted shots, of each
        shot, and over the held-out shots (one simulation serves the band's misfits too)."""
        with torch.no_grad():
            modelled = model_shots(model, cfg, wavelet=wavelet, geometry=geometry)
        held_misfit = relative_misfit(modelled[held], observed[held]) if held else math.nan
        return modelled, relative_misfit(modelled[fit], observed[fit]), shot_misfits(modelled, observed), held_misfit

    def band_misfit(modelled: torch.Tensor, cutoff: float | None, shots) -> float:
        return relative_misfit(lowpass(modelled[shots], cutoff, dt_out), lowpass(observed[shots], cutoff, dt_out))

    modelled_now, misfit, per_shot, held_misfit = measure(v.detach())
    result = FwiResult(
        velocity=start.cpu().numpy(),
        misfit_before=misfit,
        misfit_after=math.nan,
        clipped_cells=clipped,
        shot_misfits_before=per_shot,
        holdout_shots=held,
        holdout_before=held_misfit,
    )
    best_misfit, best = result.misfit_before, v.detach().clone()
    best_measures = (misfit, per_shot, held_misfit)
    if best_misfit <= rc.target_misfit:
        result.stopped = "start_fits"
    else:
        n_fit = len(fit)
        batch = min(rc.shots_per_iteration or n_fit, n_fit)
        for cutoff, n_iter in zip(rc.bands_hz, rc.iterations_per_band, strict=True):
            band_obs = lowpass(observed[fit], cutoff, dt_out)
            band_norm = torch.linalg.vector_norm(band_obs).square()
            if not float(band_norm) > 0:
                raise HpcinvError(
                    f"its recorded gathers hold no energy below {cutoff} Hz; start refine.bands_hz at a higher cut-off"
                )
            band = {"cutoff_hz": cutoff, "misfit_start": band_misfit(modelled_now, cutoff, fit)}
            if held:
                band["holdout_start"] = band_misfit(modelled_now, cutoff, held)
            optimizer = torch.optim.Adam([v], lr=rc.lr_mps)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(n_iter, 1), eta_min=rc.lr_mps * 0.1
            )
            band_history: list[float] = []
            for _ in range(n_iter):
                pick = torch.arange(n_fit) if batch == n_fit else torch.randperm(n_fit, generator=generator)[:batch]
                pick = pick.sort()[0]
                shots = fit[pick]
                obs = band_obs[pick]
                modelled = lowpass(model_shots(v, cfg, shots, wavelet=wavelet, geometry=geometry), cutoff, dt_out)
                residual = (modelled - obs).square().sum()
                loss = residual / (band_norm * batch / n_fit)
                if rc.tv_weight:
                    loss = loss + rc.tv_weight * total_variation(v)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                assert v.grad is not None  # v is the leaf the loss is minimised over
                if rc.smooth_gradient_cells:
                    v.grad = gaussian_smooth(v.grad, rc.smooth_gradient_cells)
                if rc.freeze_top_cells:
                    v.grad[: rc.freeze_top_cells] = 0
                optimizer.step()
                schedule.step()
                with torch.no_grad():
                    v.clamp_(v_min, v_max)
                band_history.append(float(residual.detach().sqrt() / (band_norm * batch / n_fit).sqrt()))
                if _stalled(band_history, rc.patience, rc.min_improvement):
                    break
            result.history.extend(band_history)
            result.band_ends.append(len(result.history))
            modelled_now, misfit, per_shot, held_misfit = measure(v.detach())
            band["misfit_end"] = band_misfit(modelled_now, cutoff, fit)
            if held:
                band["holdout_end"] = band_misfit(modelled_now, cutoff, held)
            result.bands.append(band)
            result.band_misfits.append(misfit)
            if misfit < best_misfit:
                best_misfit, best, best_measures = misfit, v.detach().clone(), (misfit, per_shot, held_misfit)
            if misfit <= rc.target_misfit:
                result.stopped = "target"
                break
    result.velocity = best.cpu().numpy().astype(np.float32)
    result.misfit_after = best_misfit
    _, result.shot_misfits_after, result.holdout_after = best_measures
    result.kept_start = result.stopped != "start_fits" and bool(torch.equal(best, start.clamp(v_min, v_max)))
    result.wall_s = time.perf_counter() - t0
    return result


def _stalled(history: list[float], patience: int, min_improvement: float) -> bool:
    """The last ``patience`` iterations lowered the misfit by less than ``min_improvement`` (relative)."""
    if patience <= 0 or len(history) <= patience:
        return False
    before, now = min(history[:-patience]), min(history[-patience:])
    return now > before * (1 - min_improvement)
