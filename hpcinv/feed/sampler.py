"""Shard-aware sampling for data-parallel training.

Each rank owns a fixed set of whole shards (shard k → rank k mod world), so a rank only ever opens
its own files and an in-memory cache on that rank stays useful across epochs. Every epoch the rank's
samples are shuffled together (seed + epoch): a batch draws from many shards, never from one shard
alone -- batches drawn shard by shard hold one model family each when training on a mixture, and
BatchNorm's running statistics then match none of them (measured: a network trained that way on two
families predicted the second family's own training models worse than their mean).

With more shards than ``window`` the shards are shuffled, then taken ``window`` at a time and the
samples of each window shuffled together, so a batch reads from about ``window`` files, whatever the
size of the dataset: a full shuffle of 100k samples in 10k shards read one file per sample, 2.0 x
slower per sample than at 1k (benchmarks/scale.py). Ranks yield the same number of samples (the
shortest rank wraps around, like ``DistributedSampler``), so collective operations stay in step.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler


class ShardAwareSampler(Sampler[int]):
    def __init__(
        self,
        positions_by_shard: list[np.ndarray],
        rank: int = 0,
        world: int = 1,
        *,
        shuffle: bool = True,
        seed: int = 0,
        window: int | None = None,
    ):
        """``positions_by_shard``: dataset positions (0..len-1) grouped by the shard they live in;
        ``window``: shards shuffled together (None: all of the rank's)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        groups = [np.asarray(g) for g in positions_by_shard if len(g)]
        if len(groups) < world:  # fewer shards than ranks: split the samples instead
            flat = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
            groups = [flat[i::world] for i in range(world)]
        self.mine = groups[rank::world]
        self.length = max(sum(len(g) for g in groups[r::world]) for r in range(world))
        self.shuffle, self.seed, self.epoch, self.window = shuffle, seed, 0, window

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        mine = np.concatenate(self.mine) if self.mine else np.zeros(0, dtype=np.int64)
        w = self.window
        if not self.shuffle:
            out = mine
        elif w is None or len(self.mine) <= w:
            out = rng.permutation(mine)
        else:
            order = rng.permutation(len(self.mine))
            out = np.concatenate(
                [
                    rng.permutation(np.concatenate([self.mine[k] for k in order[i : i + w]]))
                    for i in range(0, len(order), w)
                ]
            )
        if len(out) < self.length:
            out = np.resize(out, self.length)
        return iter(out.tolist())
