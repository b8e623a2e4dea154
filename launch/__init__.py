"""submitit launchers: ``python -m launch.generate|train|evaluate ...`` submit hpcinv's stages to SLURM.

Thin on purpose: the submitted callables live in :mod:`hpcinv.jobs`, the Ray bootstrap in
:mod:`hpcinv.cluster`; these modules only parse options, check the request and submit.
"""
