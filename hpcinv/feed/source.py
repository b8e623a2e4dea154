"""Where a rank's training batches come from: its in-memory cache (``data.cache=memory``) or reader
processes (``data.loader_workers``), both set up before the first step."""

from __future__ import annotations

import numpy as np
import torch

from hpcinv.config import TrainConfig
from hpcinv.feed.batches import RawCache
from hpcinv.feed.device import cache_batches
from hpcinv.feed.readers import BatchReaders
from hpcinv.feed.sampler import ShardAwareSampler


def batch_source(
    ds,
    sampler: ShardAwareSampler,
    cfg: TrainConfig,
    device: torch.device,
    ranks_on_node: int = 1,
    host_available: int | None = None,
):
    """``(epoch, close)``: ``epoch()`` gives one epoch of raw batches (in the sampler's current order) from
    this rank's cache (``data.cache=memory``; the node's ``host_available`` memory, read before any rank
    allocated, shared by its ``ranks_on_node`` ranks) or from reader processes that read a whole batch
    each into reused shared-memory buffers; ``close()`` stops the readers. Both are set up here, so that
    a failure (memory, page-locking) is a setup error that stops every rank at once."""
    if cfg.data.cache == "memory":
        cache = RawCache(
            ds,
            np.concatenate(sampler.mine),
            device,
            cfg.data.cache_gpu_fraction,
            ranks_on_node=ranks_on_node,
            host_available=host_available,
        )
        return (lambda: cache_batches(cache, iter(sampler), cfg.train.batch_size, pinned_ring=2)), (lambda: None)
    readers = BatchReaders(
        ds, cfg.train.batch_size, cfg.data.loader_workers, cfg.data.prefetch_factor, pin=device.type == "cuda"
    )
    if device.type == "cuda":
        readers.start()
    return (lambda: readers.epoch(iter(sampler))), readers.close
