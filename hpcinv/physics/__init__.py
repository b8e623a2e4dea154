"""Survey geometry, wavelet, validation and deepwave forward modelling (no distributed code).

Python API::

    from hpcinv.physics import simulate
    gathers = simulate(vel_ZX, cfg.survey, cfg.grid, cfg.modelling)  # (shots, time, receivers)
    gathers = simulate(vel_BZX, ...)                                   # (B, shots, time, receivers)
"""

from hpcinv.physics.analytic import homogeneous_trace_2d, relative_l2
from hpcinv.physics.forward import simulate, simulate_config
from hpcinv.physics.survey import Geometry, downsample_indices, make_geometry, ricker, source_wavelet
from hpcinv.physics.validate import PhysicsReport, validate_physics

__all__ = [
    "simulate",
    "simulate_config",
    "make_geometry",
    "Geometry",
    "ricker",
    "source_wavelet",
    "downsample_indices",
    "validate_physics",
    "PhysicsReport",
    "homogeneous_trace_2d",
    "relative_l2",
]
