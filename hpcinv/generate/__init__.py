"""Dataset generation: shard planning, the shard worker, the driver that keeps the manifest."""

from hpcinv.generate.driver import Summary, check_dataset_config, execute, prepare
from hpcinv.generate.run import generate
from hpcinv.generate.worker import ShardWorker

__all__ = ["generate", "prepare", "execute", "check_dataset_config", "Summary", "ShardWorker"]
