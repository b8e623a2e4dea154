"""submitit launchers: ``python -m launch.generate|train|predict|refine|evaluate ...`` submit hpcinv's
stages to SLURM.

Thin on purpose: each is the stage's entry in the table of stages (:mod:`hpcinv.stages`) plus the SLURM
flags; the one submitted job is :class:`hpcinv.jobs.StageJob`, the Ray bootstrap on its nodes
:mod:`hpcinv.distributed.cluster`. These modules only parse options, check the request and submit.
"""
