"""Synthetic salt velocity models in the style of the FCNVMB simulated set.

A model is a layered sedimentary background — constant-velocity layers whose velocity increases
with depth, bounded by gently folded, slightly rough interfaces, optionally cut by one normal fault
— with one or more salt bodies (domes rising from the base, lenses, or sheets: tabular bodies with
sediments below) at the salt velocity (one value, or one drawn per model from a range), and optionally
a water layer of random thickness on top.

Every model is a pure function of (config, seed, global index): its RNG is
``numpy.random.default_rng([seed, index])`` and nothing else is random, so regenerating index i
anywhere, in any process, gives identical bits.
"""

from __future__ import annotations

import numpy as np

from hpcinv.config import GridSection, SaltModelSection


def _uniform(rng: np.random.Generator, lo_hi: list[float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1])) if lo_hi[1] > lo_hi[0] else float(lo_hi[0])


def _integer(rng: np.random.Generator, lo_hi: list[int]) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _smooth_curve(rng: np.random.Generator, x: np.ndarray, amplitude: float, n_terms: int = 4) -> np.ndarray:
    """A random smooth curve of roughly ``amplitude`` built from a few sinusoids over ``x`` in [0, 1]."""
    curve = np.zeros_like(x)
    for k in range(1, n_terms + 1):
        wavenumber = rng.uniform(0.5, 3.0) * k
        curve += rng.normal(0.0, 1.0 / k) * np.sin(2 * np.pi * wavenumber * x + rng.uniform(0, 2 * np.pi))
    peak = np.abs(curve).max()
    return curve * (amplitude / peak) if peak > 0 else curve


def _background(
    rng: np.random.Generator, cfg: SaltModelSection, z: np.ndarray, x: np.ndarray, extent_z: float
) -> np.ndarray:
    n_layers = _integer(rng, cfg.n_layers)
    v_top = _uniform(rng, cfg.v_top_mps)
    v_bottom = max(_uniform(rng, cfg.v_bottom_mps), v_top)
    # Layer velocities increase with depth in random steps between the two end values.
    steps = rng.uniform(0.3, 1.0, size=n_layers - 1)
    fractions = np.concatenate([[0.0], np.cumsum(steps) / steps.sum()]) if n_layers > 1 else np.zeros(1)
    velocities = v_top + (v_bottom - v_top) * fractions
    # Interfaces: sorted random depths, a shared fold, a small wiggle of their own.
    depths = np.sort(rng.uniform(0.05, 0.95, size=n_layers - 1)) * extent_z
    fold = _smooth_curve(rng, x / x[-1], _uniform(rng, cfg.fold_amplitude_m), n_terms=2)
    roughness = _uniform(rng, cfg.roughness_m)
    interfaces = [d + fold + _smooth_curve(rng, x / x[-1], roughness, n_terms=6) for d in depths]

    z_eff = np.broadcast_to(z[:, None], (z.size, x.size)).copy()
    if rng.uniform() < cfg.fault_probability:
        # A planar fault: the hanging wall (right of the fault trace) is dropped by the throw.
        x_fault = rng.uniform(0.2, 0.8) * x[-1]
        dip_slope = np.tan(np.deg2rad(rng.uniform(50.0, 80.0))) * rng.choice([-1.0, 1.0])
        trace_x = x_fault + z / dip_slope
        throw = _uniform(rng, cfg.fault_throw_m)
        z_eff -= throw * (x[None, :] > trace_x[:, None])
    layer = np.zeros(z_eff.shape, dtype=np.int64)
    for interface in interfaces:
        layer += z_eff > interface[None, :]
    return velocities[layer]


def _salt_mask(
    rng: np.random.Generator, cfg: SaltModelSection, z: np.ndarray, x: np.ndarray, extent_z: float, extent_x: float
) -> np.ndarray:
    mask = np.zeros((z.size, x.size), dtype=bool)
    for _ in range(_integer(rng, cfg.n_salt)):
        width = _uniform(rng, cfg.salt_width) * extent_x
        centre = rng.uniform(width / 2, extent_x - width / 2) if width < extent_x else extent_x / 2
        top = _uniform(rng, cfg.salt_top_depth) * extent_z
        u = (x - (centre - width / 2)) / width  # 0..1 across the body
        inside = (u > 0) & (u < 1)
        if rng.uniform() < cfg.dome_probability:
            # Dome: its top rises from the base to `top` along a sum of one or two smooth bumps.
            n_peaks = int(rng.integers(1, 3))
            height = np.zeros_like(x)
            for _ in range(n_peaks):
                peak_at = rng.uniform(0.2, 0.8)
                spread = rng.uniform(0.12, 0.35)
                bump = np.exp(-0.5 * ((u - peak_at) / spread) ** 2)
                height = np.maximum(height, bump * rng.uniform(0.5, 1.0))
            height /= height.max()
            salt_top = extent_z - (extent_z - top) * height
            mask |= inside[None, :] & (z[:, None] >= salt_top[None, :])
        elif cfg.sheet_probability > 0 and rng.uniform() < cfg.sheet_probability:  # (no draw when off)
            # Sheet: a tabular body from `top`, 5-20 % of the depth thick, whose rough top and base
            # close towards its ends; sediments continue below it.
            thickness = rng.uniform(0.05, 0.2) * extent_z
            taper = np.sqrt(np.clip(1.0 - (2.0 * u - 1.0) ** 2, 0.0, 1.0))
            sheet_top = top + _smooth_curve(rng, u, 0.4 * thickness, n_terms=3) + 0.5 * thickness * (1.0 - taper)
            sheet_base = top + thickness * (0.5 + 0.5 * taper) + _smooth_curve(rng, u, 0.3 * thickness, n_terms=3)
            mask |= inside[None, :] & (z[:, None] >= sheet_top[None, :]) & (z[:, None] <= sheet_base[None, :])
        else:
            # Lens: a star-shaped blob whose radius varies smoothly with angle.
            half_height = rng.uniform(0.05, 0.15) * extent_z
            zc = min(top + half_height, extent_z - half_height)
            dz = (z[:, None] - zc) / half_height
            dxn = (x[None, :] - centre) / (width / 2)
            theta = np.arctan2(dz, dxn)
            radius = np.ones_like(theta)
            for k in (2, 3, 4):
                radius += rng.uniform(-0.15, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
            mask |= np.hypot(dz, dxn) < radius
    return mask


def salt_model(cfg: SaltModelSection, grid: GridSection, seed: int, index: int) -> np.ndarray:
    """Velocity model number ``index`` of the stream ``seed``, shape (nz, nx), float32, m/s."""
    if index < 0 or seed < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, index])
    z = np.arange(grid.nz) * grid.dx_m
    x = np.arange(grid.nx) * grid.dx_m
    extent_z, extent_x = z[-1], x[-1]
    vel_ZX = _background(rng, cfg, z, x, extent_z)
    salt_velocity = _uniform(rng, cfg.salt_velocity_range())  # draws nothing for a single value
    vel_ZX[_salt_mask(rng, cfg, z, x, extent_z, extent_x)] = salt_velocity
    if cfg.water_depth_m[1] > 0:
        # Water on top: a seabed at a random depth, gently undulating (up to 15 % of that depth).
        depth = _uniform(rng, cfg.water_depth_m)
        seabed = np.maximum(depth + _smooth_curve(rng, x / x[-1], 0.15 * depth, n_terms=2), 0.0)
        vel_ZX[z[:, None] < seabed[None, :]] = cfg.water_velocity_mps
    return vel_ZX.astype(np.float32)


def model_statistics(vel_NZX: np.ndarray, salt_velocity_mps: float = 4500.0) -> dict[str, float]:
    """Summary used to compare a generated set with a reference set (velocity histogram, salt, layers)."""
    vel_NZX = np.asarray(vel_NZX)
    salt = vel_NZX >= salt_velocity_mps - 1e-3
    layers = [len(np.unique(v[~s])) for v, s in zip(vel_NZX, salt, strict=True)]
    edges = np.arange(2000.0, 4750.0, 500.0)
    hist = np.histogram(np.clip(vel_NZX, edges[0], edges[-1] - 1), bins=edges)[0] / vel_NZX.size
    return {
        "v_min": float(vel_NZX.min()),
        "v_max": float(vel_NZX.max()),
        "v_mean": float(vel_NZX.mean()),
        "salt_fraction": float(salt.mean()),
        "layers_mean": float(np.mean(layers)),
        "v_top_median": float(np.median(vel_NZX[:, 0, :])),
        "histogram_edges": edges.tolist(),
        "histogram": hist.round(4).tolist(),
    }
