"""Forward modelling with deepwave's 2-D constant-density acoustic (scalar) propagator.

:func:`simulate` is the public API: one or several velocity models under one survey → gathers
shaped (…, shots, time, receivers). Every dataset pins ``max_vel``, ``pml_freq`` and the stencil
accuracy so all its models use the same internal time step. This module changes no global state:
thread counts are the caller's choice (generation workers set one thread each), and deepwave's CPU
kernels follow torch's count (:func:`match_deepwave_threads`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator
from pathlib import Path

import deepwave
import numpy as np
import torch
from deepwave import scalar

from hpcinv.config import DataConfig, GridSection, ModellingSection, SurveySection
from hpcinv.config.data import ConditioningSection
from hpcinv.errors import HpcinvError
from hpcinv.field.condition import condition_tensor, geometry_offsets
from hpcinv.physics.survey import Geometry, downsample_indices, make_geometry, source_wavelet


def resolve_device(name: str, setting: str = "modelling.device") -> torch.device:
    """The torch device of a ``setting`` (cpu | cuda | auto)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HpcinvError(f"{setting}='cuda' but no CUDA device is visible; use 'cpu' or 'auto'")
    return torch.device(name)


def check_velocity_range(vel: torch.Tensor, modelling: ModellingSection) -> None:
    """Finite, positive and not faster than the pinned ``max_vel`` (which fixes the CFL step)."""
    if not bool(torch.isfinite(vel).all()) or float(vel.min()) <= 0:
        bad = float(vel[~torch.isfinite(vel) | (vel <= 0)][0])
        raise HpcinvError(f"velocity {bad} m/s found; velocities must be finite and > 0")
    vmax = float(vel.max())
    if vmax > modelling.max_vel_mps * (1 + 1e-6):
        raise HpcinvError(
            f"velocity {vmax:g} m/s exceeds the pinned modelling.max_vel_mps={modelling.max_vel_mps:g}; "
            "raise max_vel_mps (for the whole dataset) or clip the models"
        )


@functools.cache
def deepwave_openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime deepwave's wheel bundles for its CPU kernels (``deepwave.libs/libgomp*``), or
    None when this deepwave has none of its own."""
    libs = Path(deepwave.__file__).resolve().parent.parent / "deepwave.libs"
    for path in sorted(libs.glob("libgomp*.so*")):
        try:
            return ctypes.CDLL(str(path))
        except OSError:
            return None
    return None


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block (``modelling.threads`` or
    ``refine.threads`` of work run in this process), and put back afterwards: a library call must not
    leave the caller's process on one thread. (An actor, a process of its own, sets it for good.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def match_deepwave_threads() -> None:
    """Give deepwave's CPU kernels torch's thread count (what ``modelling.threads`` / ``refine.threads``
    set). deepwave runs them on its own OpenMP runtime, which ``torch.set_num_threads`` does not reach:
    left alone it takes every core, so "one thread per process" would run as many threads as cores in
    each. OpenMP keeps the count per calling thread, so this runs in the thread that models, before
    every call (a few microseconds)."""
    omp = deepwave_openmp()
    if omp is not None:
        omp.omp_set_num_threads(torch.get_num_threads())


def boundary(modelling: ModellingSection) -> dict:
    """deepwave's edge conditions: an absorbing layer of ``pml_width`` cells on every edge, but a free
    surface (pressure held at zero: the exact odd image) on top with ``free_surface``. deepwave puts that
    surface one cell above the top row of the model."""
    if not modelling.free_surface:
        return {"pml_width": modelling.pml_width}
    edges, widths = deepwave.boundaries(2, top="free", width=modelling.pml_width)
    return {"boundary": edges, "pml_width": widths}


def _propagate(
    vel_BZX: torch.Tensor,
    geometry: Geometry,
    wavelet: torch.Tensor,
    grid: GridSection,
    survey: SurveySection,
    modelling: ModellingSection,
) -> torch.Tensor:
    """Raw receiver data (B, shots, nt, receivers) for B models, all shots in one deepwave call.
    Differentiable with respect to the velocity (deepwave's adjoint)."""
    n_models, n_shots = vel_BZX.shape[0], geometry.n_shots
    if vel_BZX.device.type == "cpu":
        match_deepwave_threads()
    src_loc, rec_loc = geometry.torch_locations(n_models, vel_BZX.device)
    amplitudes = wavelet.to(vel_BZX.device).expand(n_models * n_shots, 1, -1)
    # deepwave takes one model per shot for batched models; a single model is broadcast.
    v = vel_BZX[0] if n_models == 1 else vel_BZX.repeat_interleave(n_shots, dim=0)
    out = scalar(
        v,
        grid.dx_m,
        survey.dt_s,
        source_amplitudes=amplitudes,
        source_locations=src_loc,
        receiver_locations=rec_loc,
        accuracy=modelling.accuracy,
        **boundary(modelling),
        pml_freq=modelling.pml_freq_hz or survey.f0_hz,
        max_vel=modelling.max_vel_mps,
    )
    data_SRT = out[-1]
    return data_SRT.reshape(n_models, n_shots, geometry.n_receivers, survey.nt).transpose(2, 3)


def simulate(
    vel,
    survey: SurveySection,
    grid: GridSection,
    modelling: ModellingSection,
    *,
    dtype: torch.dtype = torch.float32,
    downsample: bool = True,
    device: str | torch.device | None = None,
    geometry: Geometry | None = None,
    conditioning: ConditioningSection | None = None,
) -> torch.Tensor:
    """Model every shot of ``survey`` over one or several velocity models.

    Args:
        vel: (nz, nx) or (B, nz, nx) velocities in m/s (numpy or torch). float64 input is modelled
            in float64 (for accuracy checks), anything else in float32.
        dtype: dtype of the returned gathers.
        downsample: keep the middle sample of every ``survey.downsample`` block (FCNVMB convention).
        device: overrides ``modelling.device``.
        conditioning: the dataset's ``conditioning`` (band-pass, mute, gain, window), applied after the
            downsampling, so the gathers are what the dataset stores.
    Returns:
        Gathers shaped (shots, time, receivers), or (B, shots, time, receivers) for a batch.
    """
    if not isinstance(vel, torch.Tensor):
        vel = np.asarray(vel)
        vel = vel if vel.flags.writeable else vel.copy()  # (a read-only view, e.g. from Ray's object store)
    vel_t = torch.as_tensor(vel)
    single = vel_t.ndim == 2
    vel_BZX = vel_t[None] if single else vel_t
    if vel_BZX.ndim != 3 or tuple(vel_BZX.shape[1:]) != (grid.nz, grid.nx):
        raise HpcinvError(
            f"velocity shape {tuple(vel_t.shape)} does not match grid (nz, nx) = "
            f"({grid.nz}, {grid.nx}) or a batch of it"
        )
    compute = torch.float64 if vel_BZX.dtype == torch.float64 else torch.float32
    dev = torch.device(device) if device is not None else resolve_device(modelling.device)
    vel_BZX = vel_BZX.to(dev, compute)
    check_velocity_range(vel_BZX, modelling)
    geometry = geometry or make_geometry(survey, grid)
    wavelet = source_wavelet(survey, dtype=compute)
    keep = torch.as_tensor(downsample_indices(survey.nt, survey.downsample)) if downsample else None
    conditioned = conditioning if conditioning is not None and conditioning.active else None
    offsets = geometry_offsets(geometry, grid.dx_m) if conditioned else None
    dt_out = survey.dt_s * (survey.downsample if downsample else 1)
    chunks = []
    with torch.no_grad():
        for start in range(0, vel_BZX.shape[0], modelling.models_per_call):
            data = _propagate(
                vel_BZX[start : start + modelling.models_per_call], geometry, wavelet, grid, survey, modelling
            )
            if keep is not None:
                data = data[:, :, keep.to(data.device), :]
            if conditioned:
                data = torch.stack([condition_tensor(d, dt_out, offsets, conditioned) for d in data])
            chunks.append(data.to(dtype))
    gathers = torch.cat(chunks)
    return gathers[0] if single else gathers


def model_shots(
    vel_ZX: torch.Tensor,
    cfg: DataConfig,
    shots: torch.Tensor | None = None,
    *,
    wavelet: torch.Tensor | None = None,
    geometry: Geometry | None = None,
) -> torch.Tensor:
    """Differentiable gathers (shots, time, receivers) of one model for the ``shots`` given (all by
    default), with the dataset's time downsampling and conditioning: what full-waveform inversion compares
    with the recorded data. ``vel_ZX`` must already lie within ``(0, max_vel_mps]``."""
    geometry = geometry or make_geometry(cfg.survey, cfg.grid)
    if shots is not None:
        geometry = geometry.shots(shots.cpu())
    wavelet = source_wavelet(cfg.survey, dtype=vel_ZX.dtype) if wavelet is None else wavelet
    data = _propagate(vel_ZX[None], geometry, wavelet, cfg.grid, cfg.survey, cfg.modelling)[0]
    keep = torch.as_tensor(downsample_indices(cfg.survey.nt, cfg.survey.downsample), device=data.device)
    data = data[:, keep, :]
    if cfg.conditioning.active:
        dt_out = cfg.survey.dt_s * cfg.survey.downsample
        data = condition_tensor(data, dt_out, geometry_offsets(geometry, cfg.grid.dx_m), cfg.conditioning)
    return data


def simulate_config(vel, cfg: DataConfig, **kwargs) -> torch.Tensor:
    """:func:`simulate` with the survey, grid, modelling and conditioning settings of a dataset config:
    the gathers the dataset stores for ``vel``."""
    return simulate(vel, cfg.survey, cfg.grid, cfg.modelling, conditioning=cfg.conditioning, **kwargs)
