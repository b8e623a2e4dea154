"""Streaming statistics (count, mean, M2, min, max) that merge exactly across shards (Chan et al.)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class RunningStats:
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    min: float = float("inf")
    max: float = float("-inf")

    @classmethod
    def of(cls, values) -> RunningStats:
        """Statistics of an array; a torch tensor is reduced where it lives (on its GPU: one small copy back)."""
        if isinstance(values, torch.Tensor):
            x = values.detach().flatten().double()
            if x.numel() == 0:
                return cls()
            mean = x.mean()
            mean_, m2, lo, hi = torch.stack([mean, ((x - mean) ** 2).sum(), x.min(), x.max()]).tolist()
            return cls(int(x.numel()), mean_, m2, lo, hi)
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size == 0:
            return cls()
        mu = float(arr.mean())
        return cls(int(arr.size), mu, float(((arr - mu) ** 2).sum()), float(arr.min()), float(arr.max()))

    def merge(self, other: RunningStats) -> RunningStats:
        if other.count == 0:
            return RunningStats(**asdict(self))
        if self.count == 0:
            return RunningStats(**asdict(other))
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / n
        return RunningStats(n, mean, m2, min(self.min, other.min), max(self.max, other.max))

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.count)) if self.count else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "std": self.std}

    @classmethod
    def from_dict(cls, d: dict) -> RunningStats:
        return cls(int(d["count"]), float(d["mean"]), float(d["m2"]), float(d["min"]), float(d["max"]))
