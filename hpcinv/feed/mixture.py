"""Several datasets trained on as one (``data.mix``): positions run through the first, then the second,
...; shards stay whole for the shard-aware sampler, and a batch takes the widest gathers dtype."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from hpcinv.store import ShardedDataset


class Concatenated(Dataset):
    """Several :class:`ShardedDataset` as one (training on a mixture): positions run through the first,
    then the second, ...; shards stay whole for the shard-aware sampler."""

    def __init__(self, datasets: list[ShardedDataset]):
        self.datasets = datasets
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in datasets])])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int):
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.datasets[k][int(i) - int(self.offsets[k])]

    @property
    def has_velocity(self) -> bool:
        return all(d.has_velocity for d in self.datasets)

    @property
    def gathers_dtype(self) -> np.dtype:
        return np.result_type(*(d.gathers_dtype for d in self.datasets))  # float16 with float32: float32

    def batch_arrays(self, n: int, alloc: Callable[..., Any] = np.empty) -> tuple[Any, Any]:
        """As :meth:`ShardedDataset.batch_arrays` (the datasets of a mixture hold samples of one shape)."""
        first = self.datasets[0].manifest
        gathers = alloc((n, *first["gathers_shape"]), self.gathers_dtype)
        vel = alloc((n, *first["velocity_shape"]), np.dtype(np.float32)) if self.has_velocity else None
        return gathers, vel

    def read_batch(
        self, positions, out: tuple[np.ndarray, np.ndarray | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        positions = np.asarray(positions, dtype=np.int64)
        part = np.searchsorted(self.offsets, positions, side="right") - 1
        gathers, vel = out if out is not None else self.batch_arrays(len(positions))
        for k in np.unique(part):
            g, v = self.datasets[k].read_batch(positions[part == k] - self.offsets[k])
            gathers[part == k] = g
            if vel is not None:
                vel[part == k] = v
        return gathers, vel

    def positions_by_shard(self) -> list[np.ndarray]:
        return [
            g + offset for d, offset in zip(self.datasets, self.offsets, strict=False) for g in d.positions_by_shard()
        ]

    def close(self) -> None:
        for d in self.datasets:
            d.close()
