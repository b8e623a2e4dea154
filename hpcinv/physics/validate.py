"""Physical validation of a dataset config, run before any work starts.

Each check raises :class:`~hpcinv.config.HpcinvError` naming the bad value and what would pass:

* velocities finite and > 0 (importers check every model; the generator by construction);
* CFL: no model may be faster than the pinned ``modelling.max_vel_mps``, which fixes deepwave's
  internal time step for the whole dataset;
* dispersion: points per wavelength at 2.5 × f0 and the slowest velocity ≥ the configured minimum;
* time sampling: the recorded (downsampled) Nyquist frequency covers 2.5 × f0;
* geometry: every source and receiver inside the grid;
* record length: the vertical two-way time to the model base, with velocity rising linearly from
  the slowest to the fastest velocity, plus the wavelet's peak time, fits in the record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deepwave.discretisation import cfl_condition

from hpcinv.config import DataConfig
from hpcinv.errors import HpcinvError
from hpcinv.physics.survey import make_geometry, peak_time_s

MAX_FREQ_FACTOR = 2.5  # highest frequency that matters in a Ricker wavelet, as a multiple of f0
# P-wave velocities of anything a seismic survey images (air 340, water 1500, salt 4500, basalt and
# crystalline basement up to ~7000 m/s); a model outside this is in other units or broken.
PLAUSIBLE_MPS = (300.0, 10_000.0)


@dataclass(frozen=True)
class PhysicsReport:
    """What validation found; stored in the manifest so a dataset documents its own numerics."""

    v_min_mps: float
    v_max_mps: float
    points_per_wavelength: float
    inner_dt_s: float
    step_ratio: int
    record_needed_s: float
    record_length_s: float


def two_way_time_s(depth_m: float, v_top: float, v_bottom: float) -> float:
    """Vertical two-way time through a layer whose velocity rises linearly from v_top to v_bottom."""
    if math.isclose(v_top, v_bottom):
        return 2 * depth_m / v_top
    return 2 * depth_m / (v_bottom - v_top) * math.log(v_bottom / v_top)


def validate_physics(cfg: DataConfig, v_min: float, v_max: float) -> PhysicsReport:
    """Check ``cfg`` for models spanning [v_min, v_max] m/s; return the numbers it checked."""
    grid, survey, modelling = cfg.grid, cfg.survey, cfg.modelling
    if not (math.isfinite(v_min) and v_min > 0 and math.isfinite(v_max) and v_max >= v_min):
        raise HpcinvError(f"velocity range [{v_min}, {v_max}] m/s is invalid: velocities must be finite and > 0")
    if v_min < PLAUSIBLE_MPS[0] or v_max > PLAUSIBLE_MPS[1]:
        raise HpcinvError(
            f"models span {v_min:g} .. {v_max:g} m/s, outside any rock's P-wave velocity ({PLAUSIBLE_MPS[0]:g} .. "
            f"{PLAUSIBLE_MPS[1]:g} m/s); check the models' values and units (km/s or ft/s must be converted to m/s)"
        )
    if v_max > modelling.max_vel_mps * (1 + 1e-6):
        raise HpcinvError(
            f"models reach {v_max:g} m/s but modelling.max_vel_mps={modelling.max_vel_mps:g}; "
            f"set modelling.max_vel_mps >= {v_max:g} so every model uses the same stable time step"
        )
    f_max = MAX_FREQ_FACTOR * survey.f0_hz
    ppw = v_min / (f_max * grid.dx_m)
    if ppw < modelling.min_points_per_wavelength:
        f0_ok = v_min / (modelling.min_points_per_wavelength * grid.dx_m * MAX_FREQ_FACTOR)
        dx_ok = v_min / (modelling.min_points_per_wavelength * f_max)
        raise HpcinvError(
            f"grid too coarse for the wavelet: {ppw:.2f} points per wavelength at {f_max:g} Hz "
            f"(2.5 x f0={survey.f0_hz:g} Hz) and {v_min:g} m/s, below "
            f"modelling.min_points_per_wavelength={modelling.min_points_per_wavelength:g}; "
            f"use survey.f0_hz <= {f0_ok:.3g} or grid.dx_m <= {dx_ok:.3g}"
        )
    recorded_dt = survey.dt_s * survey.downsample
    nyquist = 0.5 / recorded_dt
    if nyquist < f_max:
        fixes = []
        max_downsample = int(0.5 / (survey.dt_s * f_max))
        if max_downsample >= 1:
            fixes.append(f"survey.downsample <= {max_downsample}")
        fixes.append(
            f"survey.dt_s <= {0.5 / (f_max * survey.downsample):.3g} (with survey.nt raised to keep the record length)"
        )
        fixes.append(f"survey.f0_hz <= {nyquist / MAX_FREQ_FACTOR:.3g}")
        raise HpcinvError(
            f"recorded sampling {recorded_dt:g} s (dt_s x downsample) has Nyquist {nyquist:g} Hz, below "
            f"2.5 x f0 = {f_max:g} Hz; use {', or '.join(fixes)}"
        )
    make_geometry(survey, grid)  # raises if a source or receiver is outside the grid
    record = survey.nt * survey.dt_s
    needed = two_way_time_s((grid.nz - 1) * grid.dx_m, v_min, v_max) + peak_time_s(survey)
    if record < needed:
        raise HpcinvError(
            f"record of {record:g} s (survey.nt={survey.nt} x dt_s={survey.dt_s:g}) is shorter than the "
            f"{needed:.3g} s needed for a reflection from the model base; use survey.nt >= "
            f"{math.ceil(needed / survey.dt_s)}"
        )
    inner_dt, step_ratio = cfl_condition(grid.dx_m, grid.dx_m, survey.dt_s, modelling.max_vel_mps)
    return PhysicsReport(v_min, v_max, ppw, float(inner_dt), int(step_ratio), needed, record)
