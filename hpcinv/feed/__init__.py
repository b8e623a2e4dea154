"""The training input path: from stored samples to normalised batches on a rank's device.

* :mod:`~hpcinv.feed.sampler`: each rank owns whole shards (shard-aware, seeded, equal lengths);
* :mod:`~hpcinv.feed.mixture`: several datasets trained on as one;
* :mod:`~hpcinv.feed.batches`: whole raw batches read in place, and a rank's in-memory cache;
* :mod:`~hpcinv.feed.readers`: reader processes filling a ring of reused shared-memory buffers;
* :mod:`~hpcinv.feed.pinning`: page-locking those buffers in place for asynchronous copies to a GPU;
* :mod:`~hpcinv.feed.normalise`: the normalisation of gathers and velocities (also what a checkpoint
  records for inference);
* :mod:`~hpcinv.feed.device`: a background thread that copies, converts and normalises batches on the
  device ahead of the step;
* :mod:`~hpcinv.feed.source`: which of those a run uses (``data.cache``, ``data.loader_workers``).

It reads through :class:`hpcinv.store.ShardedDataset` and knows nothing of shard files. No
distributed code lives here.
"""

from hpcinv.feed.batches import RawBatches, RawCache
from hpcinv.feed.device import DeviceFeed
from hpcinv.feed.mixture import Concatenated
from hpcinv.feed.normalise import Normalised, Normaliser
from hpcinv.feed.readers import BatchReaders
from hpcinv.feed.sampler import ShardAwareSampler

__all__ = [
    "BatchReaders",
    "Concatenated",
    "DeviceFeed",
    "Normalised",
    "Normaliser",
    "RawBatches",
    "RawCache",
    "ShardAwareSampler",
]
