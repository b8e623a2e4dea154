"""``hpcinv refine``: full-waveform inversion from a starting model, fanned out like generation.

:mod:`hpcinv.refine.fwi` is the science (one model, pure torch + deepwave); :mod:`~hpcinv.refine.worker`
turns shards of a dataset into shards of refined models; :mod:`~hpcinv.refine.driver` validates,
plans, resumes and reports; :mod:`~hpcinv.refine.distributed` runs the workers as Ray actors.
"""

from hpcinv.refine.driver import refine

__all__ = ["refine"]
