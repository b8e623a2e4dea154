"""Everything distributed, and the only package that imports Ray (tests/test_layers.py checks it):

* :mod:`~hpcinv.distributed.session`: joining a Ray cluster or starting a local one;
* :mod:`~hpcinv.distributed.pool`: one pool of long-lived actors that compute the shards of a store
  (generate, predict and refine fan out through it), bounded in flight, lost shards retried;
* :mod:`~hpcinv.distributed.train`: the Ray Train adapter that runs the training loop on DDP ranks;
* :mod:`~hpcinv.distributed.cluster`: a private Ray cluster over the nodes of a SLURM job step, on which
  :class:`hpcinv.jobs.StageJob` (what ``launch/`` submits) runs a stage.

The stages themselves (what a shard is, what a rank does) are science code that never calls Ray.
"""
