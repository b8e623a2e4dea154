"""Input and target normalisation, with the parameters taken from a dataset's manifest.

Gathers (``gathers``):
* ``none`` — raw amplitudes as modelled.
* ``standard`` — (x − mean) / std over every stored gather value of the dataset.
* ``openfwi`` — OpenFWI's transform: y = sign(x)·log1p(|x|·scale), then min-max of y to [−1, 1]
  using the transformed dataset min and max (the transform is monotonic, so those are the images of
  the raw min and max). ``scale`` (default 1 / std) brings deepwave's amplitudes, whose size
  depends on units, into the range where the logarithm compresses.

Velocity (``velocity``):
* ``none`` — m/s.
* ``minmax`` — 2·(v − v_min) / (v_max − v_min) − 1 ∈ [−1, 1]; v_min/v_max default to the
  dataset's, or are given (OpenFWI uses 1500–4500 m/s).
* ``standard`` — (v − mean) / std.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

GatherNorm = Literal["none", "standard", "openfwi"]
VelocityNorm = Literal["none", "minmax", "standard"]


def _log_compress(x, scale: float):
    lib = torch if isinstance(x, torch.Tensor) else np
    return lib.sign(x) * lib.log1p(lib.abs(x) * scale)


@dataclass(frozen=True)
class Normaliser:
    gathers: GatherNorm = "none"
    velocity: VelocityNorm = "none"
    g_mean: float = 0.0
    g_std: float = 1.0
    g_min: float = -1.0
    g_max: float = 1.0
    g_scale: float = 1.0
    v_mean: float = 0.0
    v_std: float = 1.0
    v_min: float = 0.0
    v_max: float = 1.0

    @classmethod
    def from_manifest(
        cls,
        manifest: dict,
        gathers: GatherNorm = "none",
        velocity: VelocityNorm = "none",
        v_range: tuple[float, float] | None = None,
        g_scale: float | None = None,
    ) -> Normaliser:
        if gathers not in ("none", "standard", "openfwi"):
            raise ValueError(f"gather normalisation must be none, standard or openfwi, got {gathers!r}")
        if velocity not in ("none", "minmax", "standard"):
            raise ValueError(f"velocity normalisation must be none, minmax or standard, got {velocity!r}")
        g, v = manifest["stats"]["gathers"], manifest["stats"]["velocity"]
        g_std = g["std"] or 1.0
        scale = g_scale if g_scale is not None else 1.0 / g_std
        v_min, v_max = v_range if v_range is not None else (v["min"], v["max"])
        if not v_max > v_min:
            raise ValueError(f"velocity range for minmax must have max > min, got ({v_min}, {v_max})")
        return cls(
            gathers,
            velocity,
            g["mean"],
            g_std,
            float(_log_compress(np.float64(g["min"]), scale)),
            float(_log_compress(np.float64(g["max"]), scale)),
            scale,
            v["mean"],
            v["std"] or 1.0,
            float(v_min),
            float(v_max),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def gathers_fwd(self, x):
        if self.gathers == "standard":
            return (x - self.g_mean) / self.g_std
        if self.gathers == "openfwi":
            y = _log_compress(x, self.g_scale)
            return 2 * (y - self.g_min) / (self.g_max - self.g_min) - 1
        return x

    def velocity_fwd(self, v):
        if self.velocity == "minmax":
            return 2 * (v - self.v_min) / (self.v_max - self.v_min) - 1
        if self.velocity == "standard":
            return (v - self.v_mean) / self.v_std
        return v

    def velocity_inv(self, v):
        """Back to m/s."""
        if self.velocity == "minmax":
            return (v + 1) * 0.5 * (self.v_max - self.v_min) + self.v_min
        if self.velocity == "standard":
            return v * self.v_std + self.v_mean
        return v


class Normalised(Dataset):
    """A dataset's samples as a network sees them: ``(gathers_STR, vel_ZX)`` float32 tensors, normalised
    (the per-sample path, e.g. for torch's DataLoader; training reads whole batches through the feed)."""

    def __init__(self, dataset: Dataset, normaliser: Normaliser):
        self.dataset, self.normaliser = dataset, normaliser

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gathers, velocity = self.dataset[i]
        return self.normaliser.gathers_fwd(gathers), self.normaliser.velocity_fwd(velocity)
