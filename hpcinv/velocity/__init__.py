"""Velocity models: the synthetic salt generator and importers for model collections.

:func:`make_source` turns a :class:`~hpcinv.config.DataConfig` into a :class:`VelocitySource`, the
one interface generation uses: ``len(source)`` models, ``source.model(i)`` for global index ``i``
(float32, (nz, nx), m/s, on the dataset grid) and ``source.bounds()`` for validation.
"""

from __future__ import annotations

import numpy as np

from hpcinv.config import DataConfig
from hpcinv.errors import HpcinvError
from hpcinv.velocity.io import check_models, read_collection, resample
from hpcinv.velocity.synthetic import model_statistics, salt_model

__all__ = [
    "VelocitySource",
    "SyntheticSource",
    "CollectionSource",
    "make_source",
    "salt_model",
    "model_statistics",
    "read_collection",
    "resample",
    "check_models",
]


class VelocitySource:
    """Models by global dataset index."""

    def __len__(self) -> int:
        raise NotImplementedError

    def model(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def models(self, start: int, stop: int) -> np.ndarray:
        return np.stack([self.model(i) for i in range(start, stop)])

    def bounds(self) -> tuple[float, float]:
        """(slowest, fastest) velocity any model may hold, in m/s."""
        raise NotImplementedError


class SyntheticSource(VelocitySource):
    def __init__(self, cfg: DataConfig, n_samples: int):
        self.cfg, self.n = cfg, n_samples

    def __len__(self) -> int:
        return self.n

    def model(self, index: int) -> np.ndarray:
        return salt_model(self.cfg.velocity.synthetic, self.cfg.grid, self.cfg.dataset.seed, index)

    def bounds(self) -> tuple[float, float]:
        return self.cfg.velocity.synthetic.velocity_bounds()


class CollectionSource(VelocitySource):
    """An imported collection, checked for bad values and resampled onto the grid as it is read."""

    def __init__(self, cfg: DataConfig, n_samples: int | None, raw: np.ndarray | None = None):
        """``raw``: the collection already read (e.g. shared through Ray's object store)."""
        self.cfg = cfg
        self.raw = read_collection(cfg.velocity) if raw is None else raw
        start = cfg.dataset.start_index
        available = self.raw.shape[0] - start
        if available <= 0:
            raise HpcinvError(f"dataset.start_index={start} but {cfg.velocity.path!r} holds {self.raw.shape[0]} models")
        if n_samples is not None and n_samples > available:
            raise HpcinvError(
                f"dataset.n_samples={n_samples} but {cfg.velocity.path!r} holds {available} models "
                f"from index {start}; use n_samples <= {available} or null for all"
            )
        self.n = available if n_samples is None else n_samples
        self._bounds: tuple[float, float] | None = None

    def __len__(self) -> int:
        return self.n

    def models(self, start: int, stop: int) -> np.ndarray:
        if not 0 <= start <= stop <= self.n:
            raise IndexError(f"models [{start}, {stop}) outside [0, {self.n})")
        first = self.cfg.dataset.start_index
        raw = np.asarray(self.raw[first + start : first + stop], dtype=np.float32)
        check_models(raw, str(self.cfg.velocity.path), first_index=first + start)
        grid = self.cfg.grid
        return resample(raw, grid.nz, grid.nx, self.cfg.velocity.resample)

    def model(self, index: int) -> np.ndarray:
        return self.models(index, index + 1)[0]

    def bounds(self) -> tuple[float, float]:
        """Checks every model of the collection (NaN, Inf, <= 0) and returns its velocity range."""
        if self._bounds is None:
            first = self.cfg.dataset.start_index
            raw = self.raw[first : first + self.n]
            check_models(raw, str(self.cfg.velocity.path), first_index=first)
            self._bounds = (float(np.min(raw)), float(np.max(raw)))
        return self._bounds


def make_source(cfg: DataConfig) -> VelocitySource:
    if cfg.velocity.source == "synthetic":
        if cfg.dataset.n_samples is None:
            raise HpcinvError("dataset.n_samples must be set for velocity.source='synthetic'")
        return SyntheticSource(cfg, cfg.dataset.n_samples)
    return CollectionSource(cfg, cfg.dataset.n_samples)
