"""Analytic reference solutions used to check modelling accuracy.

deepwave solves ∇²u − u_tt / c² = f, and a per-cell source amplitude s(t) acts as a point source of
strength s·Δx·Δz. In a homogeneous medium the 2-D solution is, in the frequency domain with
numpy's rfft convention, U(ω) = (i/4)·Δx·Δz·H₀⁽²⁾(ω r / c)·S(ω).
"""

from __future__ import annotations

import numpy as np
from scipy.special import hankel2


def homogeneous_trace_2d(
    wavelet: np.ndarray,
    dt_s: float,
    velocity_mps: float,
    offset_m: float,
    dx_m: float,
    dz_m: float | None = None,
    pad_factor: int = 4,
) -> np.ndarray:
    """Pressure trace at ``offset_m`` from a point source with time function ``wavelet``.

    The wavelet is zero-padded ``pad_factor`` times before the FFT so that the periodic
    convolution does not wrap the long 2-D tail back onto the start of the trace.
    """
    dz_m = dx_m if dz_m is None else dz_m
    nt = len(wavelet)
    n = nt * pad_factor
    spectrum = np.fft.rfft(wavelet, n)
    omega = 2 * np.pi * np.fft.rfftfreq(n, dt_s)
    green = np.zeros_like(spectrum)
    nonzero = omega > 0
    green[nonzero] = 0.25j * dx_m * dz_m * hankel2(0, omega[nonzero] * offset_m / velocity_mps)
    return np.fft.irfft(green * spectrum, n)[:nt]


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))
