"""The on-disk format: sharded HDF5 datasets and velocity stores, their manifests, verification, the
reader of stored samples, the writer that resumes and records, and the folders' locks.

The format is described in docs/FORMAT.md. Callers go through this interface; the shard folder's
layout stays inside the package. The training input path built on the reader is :mod:`hpcinv.feed`.
No distributed code lives here.
"""

from hpcinv.store.dataset import ShardedDataset, mean_velocity
from hpcinv.store.lock import folder_lock
from hpcinv.store.manifest import (
    VerifyReport,
    dataset_identity,
    has_velocity,
    load_dataset_config,
    read_manifest,
    require_readable,
    select_range,
    split_range,
    verify_dataset,
    write_manifest,
)
from hpcinv.store.shard import ShardSpec, file_sha256, plan_shards, write_shard
from hpcinv.store.stats import RunningStats

__all__ = [
    "ShardedDataset",
    "mean_velocity",
    "ShardSpec",
    "plan_shards",
    "write_shard",
    "file_sha256",
    "read_manifest",
    "write_manifest",
    "verify_dataset",
    "require_readable",
    "split_range",
    "select_range",
    "dataset_identity",
    "has_velocity",
    "VerifyReport",
    "load_dataset_config",
    "folder_lock",
    "RunningStats",
]
