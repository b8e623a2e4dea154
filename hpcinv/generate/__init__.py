"""Dataset generation (the ``generate`` stage: :mod:`hpcinv.stages.generate`): shard planning and the
in-process executor, the shard worker, the import of recorded gathers."""

from hpcinv.generate.driver import Summary, check_dataset_config, execute, prepare
from hpcinv.generate.worker import ShardWorker

__all__ = ["prepare", "execute", "check_dataset_config", "Summary", "ShardWorker"]
