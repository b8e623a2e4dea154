"""A U-Net whose skips stay in the model domain.

FCNVMB's encoder works on the gathers (time × receivers) and its skips hand those features to a
decoder that draws the model (depth × distance): every skip joins tensors of two different domains.
Here a *data encoder* first maps the multi-shot gathers onto a latent grid that is the velocity grid
(``latent_scale`` 1) or a fixed fraction of it (2: every other cell), and a U-Net then works on that
grid alone, so each skip joins features of the same places.

Input ``gathers_BSTR`` (shots as channels), output ``vel_B1ZX``. The data encoder:

* **time blocks**: conv units striding over time only — (7, 1) then (3, 1) kernels, each stride-2
  unit followed by a stride-1 one (InversionNet's opening) — until the time axis ``T'`` is at most
  half the latent depth;
* **to the latent grid** (``encoder``):

  - ``"columns"`` — a learned time-to-depth map per receiver: one conv unit spanning all of ``T'``
    gives ``base_channels × Z'`` features per receiver, read as a (Z', receivers) map: every latent
    depth cell sees the whole record of its receiver (a reflection's time maps to a depth that
    depends on the velocity above it, which a local convolution cannot know);
  - ``"resample"`` — a 3×3 conv unit, then the time axis is resampled (bilinear) onto depth: each
    latent cell sees only the time window that its convolutions reach;

  then the receivers are resampled (bilinear, ends on ends) onto the ``X'`` columns.

The U-Net on the latent grid is FCNVMB's blocks (:class:`~hpcinv.nets.fcnvmb.Down`,
:class:`~hpcinv.nets.fcnvmb.Up` with standard skips and ceil pooling; each level's output is cropped
to its skip's size, so the skips stay aligned cell for cell); with ``latent_scale`` 2 a transposed conv and
a double conv bring it to the full grid. A 1×1 conv gives one channel. Every conv is a
:class:`~hpcinv.nets.fcnvmb.ConvUnit`, so the activation-checkpointing modes ``blocks``, ``units`` and
``nested`` and the precisions apply as to FCNVMB. Pure torch: no distributed code.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hpcinv.nets.fcnvmb import ConvUnit, DoubleConv, Down, Up

ENCODERS = ("columns", "resample")


class ModelDomainUNet(nn.Module):
    def __init__(
        self,
        in_shots: int = 29,
        in_shape: tuple[int, int] = (400, 301),
        out_shape: tuple[int, int] = (201, 301),
        base_channels: int = 32,
        depth: int = 4,
        encoder: Literal["columns", "resample"] = "columns",
        latent_scale: int = 1,
        batchnorm: bool = True,
    ):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if latent_scale not in (1, 2):
            raise ValueError(f"latent_scale must be 1 (the velocity grid) or 2 (every other cell), got {latent_scale}")
        if depth < 1 or base_channels < 1:
            raise ValueError(f"depth and base_channels must be >= 1, got {depth}, {base_channels}")
        c = base_channels
        self.encoder, self.out_shape, self.latent_scale = encoder, tuple(out_shape), latent_scale
        self.latent_shape = (math.ceil(out_shape[0] / latent_scale), math.ceil(out_shape[1] / latent_scale))
        t = in_shape[0]
        units: list[nn.Module] = []
        while not units or t > max(1, self.latent_shape[0] // 2):
            first = not units
            kernel = 7 if first else 3
            units.append(ConvUnit(in_shots if first else c, c, batchnorm, (kernel, 1), (2, 1), (kernel // 2, 0)))
            units.append(ConvUnit(c, c, batchnorm, (3, 1), 1, (1, 0)))
            t = (t - 1) // 2 + 1
        self.time_blocks = nn.Sequential(*units)
        self.time_cells = t
        if encoder == "columns":  # one unit whose kernel spans the whole remaining time axis
            self.to_latent = ConvUnit(c, c * self.latent_shape[0], batchnorm, (t, 1), 1, 0)
        else:
            self.to_latent = ConvUnit(c, c, batchnorm)
        filters = [c * 2**i for i in range(depth + 1)]
        self.downs = nn.ModuleList(
            Down(cin, cout, batchnorm) for cin, cout in zip([c, *filters[:-2]], filters[:-1], strict=True)
        )
        self.center = DoubleConv(filters[-2], filters[-1], batchnorm)
        self.ups = nn.ModuleList(Up(filters[i + 1], filters[i], batchnorm) for i in reversed(range(depth)))
        self.upsample = (
            nn.Sequential(nn.ConvTranspose2d(c, c, 2, 2), DoubleConv(c, c, batchnorm)) if latent_scale == 2 else None
        )
        self.final = nn.Conv2d(c, 1, 1)

    def encoder_modules(self) -> list[nn.Module]:
        return [self.time_blocks, self.to_latent, *self.downs, self.center]

    def checkpoint_blocks(self) -> list[nn.Module]:
        blocks = [*self.time_blocks, self.to_latent, *self.downs, self.center, *self.ups]
        return blocks + ([self.upsample] if self.upsample is not None else [])

    def latent(self, gathers_BSTR: torch.Tensor) -> torch.Tensor:
        """The gathers mapped onto the latent grid: (batch, base_channels, Z', X')."""
        x = self.to_latent(self.time_blocks(gathers_BSTR))
        zl, xl = self.latent_shape
        if self.encoder == "columns":  # (B, C·Z', 1, R) -> (B, C, Z', R)
            x = x.reshape(x.shape[0], -1, zl, x.shape[3])
            return F.interpolate(x, size=(zl, xl), mode="bilinear", align_corners=True) if x.shape[3] != xl else x
        return F.interpolate(x, size=(zl, xl), mode="bilinear", align_corners=False)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """The U-Net on the latent grid (and the step up to the velocity grid): ``vel_B1ZX``."""
        x, skips = latent, []
        for down in self.downs:
            x, features = down(x)
            skips.append(features)
        x = self.center(x)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(skip, x)[:, :, : skip.shape[2], : skip.shape[3]]  # ceil pooling's extra row/column
        if self.upsample is not None:
            x = self.upsample(x)
        nz, nx = self.out_shape
        return self.final(x[:, :, :nz, :nx].contiguous())

    def forward(self, gathers_BSTR: torch.Tensor) -> torch.Tensor:
        return self.decode(self.latent(gathers_BSTR))
