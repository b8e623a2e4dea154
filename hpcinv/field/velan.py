"""Classical velocity analysis, a check on a velocity model that needs no true model: the semblance of
hyperbolic moveout over a gather (or several, stacked) → picked RMS velocities → Dix interval
velocities → an interval-velocity profile in depth.

For flat layers the reflection time at offset x is close to the hyperbola t(x)² = t0² + x² / v_rms²,
with v_rms the root-mean-square of the interval velocities above the reflector weighted by their
two-way times (Dix 1955). Semblance (Neidell & Taner 1971) measures how well a trial velocity flattens
the gather: (Σ_x a)² / (N Σ_x a²) summed over a short time window, 1 for a perfectly flattened event.
A shot gather stands in for a common-midpoint gather where the layers are flat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcinv.errors import HpcinvError


@dataclass
class Picks:
    """RMS velocity picks and what Dix's equation makes of them."""

    t0_s: np.ndarray  # zero-offset two-way times
    v_rms_mps: np.ndarray
    semblance: np.ndarray  # at each pick
    v_interval_mps: np.ndarray  # of the layer above each pick
    depth_m: np.ndarray  # of each pick (bottom of its layer)

    def profile(self, depth_m: np.ndarray) -> np.ndarray:
        """Interval velocity at ``depth_m`` (a step function; below the last pick: its layer's velocity)."""
        layer = np.searchsorted(self.depth_m, np.asarray(depth_m), side="left")
        return self.v_interval_mps[np.minimum(layer, len(self.depth_m) - 1)]


def semblance(
    gathers_GTR: np.ndarray,
    offsets_GR: np.ndarray,
    dt_s: float,
    velocities_mps: np.ndarray,
    *,
    window_s: float = 0.04,
    max_stretch: float = 0.5,
    min_traces: int = 6,
) -> tuple[np.ndarray, np.ndarray]:
    """Semblance and stack power, each (time, velocity), of hyperbolic moveout over the gathers
    ``(gathers, time, receivers)`` (or one ``(time, receivers)``) stacked together. Samples stretched by
    NMO more than ``max_stretch`` (t / t0 − 1) are left out (the usual stretch mute); times where fewer
    than ``min_traces`` traces remain get semblance 0."""
    gathers = np.asarray(gathers_GTR, dtype=np.float64)
    offsets = np.asarray(offsets_GR, dtype=np.float64)
    if gathers.ndim == 2:
        gathers, offsets = gathers[None], offsets[None]
    n_g, nt, n_r = gathers.shape
    if offsets.shape != (n_g, n_r):
        raise HpcinvError(f"offsets of shape {list(offsets.shape)} do not match gathers of shape {list(gathers.shape)}")
    t0 = np.arange(nt) * dt_s
    half = max(int(round(window_s / dt_s / 2)), 0)
    kernel = np.ones(2 * half + 1)
    sem = np.zeros((nt, len(velocities_mps)))
    power = np.zeros_like(sem)
    cols = np.arange(n_r)[None, :]
    for j, v in enumerate(np.asarray(velocities_mps, dtype=np.float64)):
        num, den, live = np.zeros(nt), np.zeros(nt), np.zeros(nt)
        for g in range(n_g):
            t = np.sqrt(t0[:, None] ** 2 + (offsets[g][None, :] / v) ** 2)  # (T, R)
            idx = t / dt_s
            keep = (idx <= nt - 1) & (t <= (1 + max_stretch) * np.maximum(t0[:, None], 1e-12))
            i0 = np.clip(np.floor(idx).astype(np.int64), 0, nt - 2)
            frac = idx - i0
            a = np.where(keep, (1 - frac) * gathers[g][i0, cols] + frac * gathers[g][i0 + 1, cols], 0.0)
            n = keep.sum(axis=1)
            num += a.sum(axis=1) ** 2
            den += n * (a**2).sum(axis=1)
            live += n
        num, den = np.convolve(num, kernel, mode="same"), np.convolve(den, kernel, mode="same")
        ok = (den > 0) & (live >= min_traces)
        sem[:, j] = np.divide(num, den, out=np.zeros(nt), where=ok)
        power[:, j] = np.divide(num, live**2, out=np.zeros(nt), where=ok)  # (mean stacked amplitude)²
    return sem, power


def _vertex(values: np.ndarray, i: int) -> float:
    """Offset (-0.5 .. 0.5) of the parabola's vertex through values[i - 1 : i + 2] from i."""
    if 0 < i < len(values) - 1:
        a, b, c = values[i - 1 : i + 2]
        denom = a - 2 * b + c
        if denom < 0:
            return float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    return 0.0


def pick(
    semblance_TV: np.ndarray,
    power_TV: np.ndarray,
    dt_s: float,
    velocities_mps: np.ndarray,
    *,
    min_semblance: float = 0.2,
    min_separation_s: float = 0.1,
    min_time_s: float = 0.0,
    min_interval_mps: float = 0.0,
) -> Picks:
    """RMS velocity picks: at each time the velocity of best semblance; the reflections are the peaks in
    time of the stack power at that velocity where the semblance reaches ``min_semblance`` (at least
    ``min_separation_s`` apart, the strongest kept first); time and velocity refined by parabolas through
    their neighbours. Going down in time, a pick is dropped when its RMS velocity is below the last kept
    one's or Dix would give it an interval velocity below ``min_interval_mps`` (multiples, whose moveout
    is that of the slow layers they bounced in, and noise), or when its best velocity is the first or
    last one scanned (the semblance peak lies outside the scan)."""
    velocities = np.asarray(velocities_mps, dtype=np.float64)
    nt = semblance_TV.shape[0]
    best_v = semblance_TV.argmax(axis=1)
    best = semblance_TV[np.arange(nt), best_v]
    strength = power_TV[np.arange(nt), best_v]
    sep = max(int(round(min_separation_s / dt_s)), 1)
    first = max(int(np.ceil(min_time_s / dt_s)), 1)
    candidates = [
        i
        for i in range(first, nt - 1)
        if best[i] >= min_semblance and strength[i] >= strength[i - 1] and strength[i] > strength[i + 1]
    ]
    chosen: list[int] = []
    for i in sorted(candidates, key=lambda i: -strength[i]):
        if all(abs(i - c) >= sep for c in chosen):
            chosen.append(i)
    t0: list[float] = []
    v_rms: list[float] = []
    value: list[float] = []
    for i in sorted(chosen):
        j = int(best_v[i])
        if j in (0, len(velocities) - 1):
            continue
        step = (velocities[min(j + 1, len(velocities) - 1)] - velocities[max(j - 1, 0)]) / 2
        v = velocities[j] + _vertex(semblance_TV[i], j) * step
        t = (i + _vertex(strength, i)) * dt_s
        t_prev, w_prev = (t0[-1], v_rms[-1] ** 2 * t0[-1]) if t0 else (0.0, 0.0)
        if (v_rms and v < v_rms[-1]) or v * v * t - w_prev < min_interval_mps**2 * (t - t_prev):
            continue
        t0.append(t)
        v_rms.append(float(v))
        value.append(float(best[i]))
    return dix(np.asarray(t0), np.asarray(v_rms), np.asarray(value))


def dix(t0_s: np.ndarray, v_rms_mps: np.ndarray, semblance_values: np.ndarray | None = None) -> Picks:
    """Interval velocities and depths from RMS velocities at increasing zero-offset times (Dix)."""
    t0 = np.asarray(t0_s, dtype=np.float64)
    vr = np.asarray(v_rms_mps, dtype=np.float64)
    if len(t0) == 0:
        raise HpcinvError("no reflection was picked: no semblance peak above the threshold")
    if (np.diff(t0) <= 0).any():
        raise HpcinvError(f"the picks' times must increase, got {t0.tolist()}")
    t_prev = np.concatenate([[0.0], t0[:-1]])
    w_prev = np.concatenate([[0.0], (vr**2 * t0)[:-1]])
    v_int = np.sqrt(np.maximum(vr**2 * t0 - w_prev, 0.0) / (t0 - t_prev))
    depth = np.cumsum(v_int * (t0 - t_prev) / 2)
    return Picks(
        t0_s=t0,
        v_rms_mps=vr,
        semblance=np.ones_like(t0) if semblance_values is None else np.asarray(semblance_values),
        v_interval_mps=v_int,
        depth_m=depth,
    )


def rms_velocities(thickness_m, v_interval_mps) -> tuple[np.ndarray, np.ndarray]:
    """Zero-offset two-way times and RMS velocities at the base of each flat layer (Dix's forward
    relation): what a velocity analysis of the layers should find."""
    h = np.asarray(thickness_m, dtype=np.float64)
    v = np.asarray(v_interval_mps, dtype=np.float64)
    dt = 2 * h / v
    t0 = np.cumsum(dt)
    return t0, np.sqrt(np.cumsum(v**2 * dt) / t0)
