"""Data conditioning (``conditioning:`` of a data config), applied the same way to recorded gathers (at
import), to modelled ones (generation, and every simulation of refine) so a network and a refine see
one kind of data: time window, zero-phase band-pass, mute of the direct wave, time-power gain — each
optional, in that order. One implementation in torch, differentiable, so refine conditions its modelled
gathers exactly as the recording was."""

from __future__ import annotations

import numpy as np
import torch

from hpcinv.config.data import ConditioningSection
from hpcinv.errors import HpcinvError

TAPER_S = 0.02  # cosine taper at each edge of the mute
BUTTERWORTH_ORDER = 4  # per direction: the zero-phase response is the squared magnitude of this order


def n_kept(nt: int, dt_s: float, cond: ConditioningSection) -> int:
    """Samples left after the time window."""
    if cond.max_time_s is None:
        return nt
    return min(nt, int(np.floor(cond.max_time_s / dt_s + 1e-9)) + 1)


def band_response(n: int, dt_s: float, low_hz: float, high_hz: float, dtype=torch.float64) -> torch.Tensor:
    """Zero-phase Butterworth band-pass response on ``rfftfreq(n, dt_s)``: the squared magnitude of order
    :data:`BUTTERWORTH_ORDER` (what filtering forward and backward gives); ``low_hz`` 0: a low-pass."""
    nyquist = 0.5 / dt_s
    if high_hz >= nyquist:
        raise HpcinvError(
            f"conditioning.bandpass_hz high cut {high_hz:g} Hz is at or above the Nyquist frequency "
            f"{nyquist:g} Hz of the {dt_s * 1e3:g} ms sampling; give a lower high cut"
        )
    f = torch.fft.rfftfreq(n, dt_s, dtype=dtype)
    response = 1.0 / (1.0 + (f / high_hz) ** (2 * BUTTERWORTH_ORDER))
    if low_hz > 0:
        response = response / (1.0 + (low_hz / f.clamp_min(1e-12)) ** (2 * BUTTERWORTH_ORDER))
    return response


def direct_wave_mute(nt: int, dt_s: float, offsets_R, velocity_mps: float, window_s) -> np.ndarray:
    """(time, receivers) weights: 0 from ``window_s[0]`` before to ``window_s[1]`` after the direct
    arrival |offset| / velocity, 1 outside, cosine tapers of :data:`TAPER_S` at both edges."""
    t = np.arange(nt)[:, None] * dt_s
    arrival = np.abs(np.asarray(offsets_R, dtype=np.float64))[None, :] / velocity_mps
    inside = np.minimum(t - (arrival - window_s[0]), (arrival + window_s[1]) - t)  # s into the window
    ramp = np.clip(inside / TAPER_S, 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * ramp)).astype(np.float32)


def condition_tensor(data_STR: torch.Tensor, dt_s: float, offsets_SR, cond: ConditioningSection) -> torch.Tensor:
    """``data_STR`` (shots, time, receivers) conditioned as ``cond`` says (differentiable);
    ``offsets_SR`` are each receiver's signed offset from its shot (m), (shots, receivers) or (receivers,)."""
    if not cond.active:
        return data_STR
    data = data_STR[:, : n_kept(data_STR.shape[1], dt_s, cond)]
    nt = data.shape[1]
    if cond.bandpass_hz is not None:
        n = 2 * nt  # zero-padded so nothing wraps around
        response = band_response(n, dt_s, *cond.bandpass_hz).to(data.device, data.dtype)
        data = torch.fft.irfft(torch.fft.rfft(data, n=n, dim=1) * response[:, None], n=n, dim=1)[:, :nt]
    if cond.mute_velocity_mps is not None:
        offsets = np.broadcast_to(np.asarray(offsets_SR, dtype=np.float64), (data.shape[0], data.shape[2]))
        weights = np.stack([direct_wave_mute(nt, dt_s, o, cond.mute_velocity_mps, cond.mute_window_s) for o in offsets])
        data = data * torch.from_numpy(weights).to(data.device, data.dtype)
    if cond.gain_power is not None:
        t = torch.arange(nt, dtype=torch.float64) * dt_s
        data = data * (t**cond.gain_power).to(data.device, data.dtype)[None, :, None]
    return data


def condition(data_STR: np.ndarray, dt_s: float, offsets_SR, cond: ConditioningSection) -> np.ndarray:
    """:func:`condition_tensor` on a NumPy array (float32 out)."""
    with torch.no_grad():
        out = condition_tensor(torch.from_numpy(np.asarray(data_STR, dtype=np.float64)), dt_s, offsets_SR, cond)
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


def geometry_offsets(geometry, dx_m: float) -> np.ndarray:
    """(shots, receivers) signed offsets in metres of a :class:`~hpcinv.physics.survey.Geometry`."""
    receivers_x = geometry.receiver_cells[..., 1]
    receivers_x = receivers_x if geometry.moving else np.broadcast_to(receivers_x, (geometry.n_shots, len(receivers_x)))
    return (receivers_x - geometry.source_cells[:, 1][:, None]) * dx_m
