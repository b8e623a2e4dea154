"""Sharded HDF5 datasets: atomic shard writer, manifest, verify, torch Dataset, normalisation, locks.

The format is described in docs/FORMAT.md. No distributed code lives here.
"""

from hpcinv.store.batches import RawBatches, RawCache
from hpcinv.store.dataset import ShardedDataset
from hpcinv.store.lock import folder_lock
from hpcinv.store.manifest import (
    CONFIG,
    MANIFEST,
    VerifyReport,
    load_dataset_config,
    read_manifest,
    require_readable,
    split_range,
    verify_dataset,
    write_manifest,
)
from hpcinv.store.normalise import Normaliser
from hpcinv.store.readers import BatchReaders
from hpcinv.store.shard import SHARD_DIR, ShardSpec, file_sha256, plan_shards, write_shard
from hpcinv.store.stats import RunningStats

__all__ = [
    "ShardedDataset",
    "RawBatches",
    "RawCache",
    "BatchReaders",
    "Normaliser",
    "ShardSpec",
    "plan_shards",
    "write_shard",
    "file_sha256",
    "read_manifest",
    "write_manifest",
    "verify_dataset",
    "require_readable",
    "split_range",
    "VerifyReport",
    "load_dataset_config",
    "folder_lock",
    "RunningStats",
    "MANIFEST",
    "CONFIG",
    "SHARD_DIR",
]
