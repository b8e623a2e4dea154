"""Full-waveform inversion from a starting model (the ``refine`` stage: :mod:`hpcinv.stages.refine`).

:mod:`hpcinv.refine.fwi` is the science (one model, pure torch + deepwave); :mod:`~hpcinv.refine.worker`
turns shards of a dataset into shards of refined models; :mod:`~hpcinv.refine.driver` validates, plans,
resumes and reports.
"""
