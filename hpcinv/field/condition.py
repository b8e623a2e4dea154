"""Data conditioning (``conditioning:`` of a data config), applied the same way to recorded and to
modelled gathers so a network and a refine see one kind of data: time window, zero-phase band-pass,
mute of the direct wave, time-power gain — each optional, in that order."""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfiltfilt

from hpcinv.config.data import ConditioningSection
from hpcinv.errors import HpcinvError

TAPER_S = 0.02  # cosine taper at each edge of the mute


def n_kept(nt: int, dt_s: float, cond: ConditioningSection) -> int:
    """Samples left after the time window."""
    if cond.max_time_s is None:
        return nt
    return min(nt, int(np.floor(cond.max_time_s / dt_s + 1e-9)) + 1)


def bandpass(data: np.ndarray, dt_s: float, low_hz: float, high_hz: float, axis: int = -2) -> np.ndarray:
    """Zero-phase Butterworth band-pass (order 4, applied forward and backward) along ``axis``;
    ``low_hz`` 0 gives a low-pass."""
    nyquist = 0.5 / dt_s
    if high_hz >= nyquist:
        raise HpcinvError(
            f"conditioning.bandpass_hz high cut {high_hz:g} Hz is at or above the Nyquist frequency "
            f"{nyquist:g} Hz of the {dt_s * 1e3:g} ms sampling; give a lower high cut"
        )
    if low_hz > 0:
        sos = butter(4, [low_hz, high_hz], btype="bandpass", fs=1.0 / dt_s, output="sos")
    else:
        sos = butter(4, high_hz, btype="lowpass", fs=1.0 / dt_s, output="sos")
    return sosfiltfilt(sos, data, axis=axis).astype(data.dtype, copy=False)


def direct_wave_mute(nt: int, dt_s: float, offsets_R: np.ndarray, velocity_mps: float, window_s) -> np.ndarray:
    """(time, receivers) weights: 0 from ``window_s[0]`` before to ``window_s[1]`` after the direct
    arrival |offset| / velocity, 1 outside, cosine tapers of :data:`TAPER_S` at both edges."""
    t = np.arange(nt)[:, None] * dt_s
    arrival = np.abs(np.asarray(offsets_R, dtype=np.float64))[None, :] / velocity_mps
    start, stop = arrival - window_s[0], arrival + window_s[1]
    # distance (s) into the muted window from its nearer edge; negative outside
    inside = np.minimum(t - start, stop - t)
    ramp = np.clip(inside / TAPER_S, 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * ramp)).astype(np.float32)


def condition(data_STR: np.ndarray, dt_s: float, offsets_SR: np.ndarray, cond: ConditioningSection) -> np.ndarray:
    """``data_STR`` (shots, time, receivers) conditioned as ``cond`` says; ``offsets_SR`` are each
    receiver's signed offset from its shot (m)."""
    data = np.asarray(data_STR, dtype=np.float32)
    if not cond.active:
        return data
    data = data[:, : n_kept(data.shape[1], dt_s, cond)]
    if cond.bandpass_hz is not None:
        low, high = cond.bandpass_hz
        data = bandpass(data, dt_s, low, high, axis=1)
    if cond.mute_velocity_mps is not None:
        offsets_SR = np.broadcast_to(np.asarray(offsets_SR, dtype=np.float64), (data.shape[0], data.shape[2]))
        data = data * np.stack(
            [
                direct_wave_mute(data.shape[1], dt_s, offsets, cond.mute_velocity_mps, cond.mute_window_s)
                for offsets in offsets_SR
            ]
        )
    if cond.gain_power is not None:
        t = np.arange(data.shape[1], dtype=np.float64) * dt_s
        data = data * (t**cond.gain_power).astype(np.float32)[None, :, None]
    return np.ascontiguousarray(data, dtype=np.float32)
