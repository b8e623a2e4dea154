"""The FCNVMB U-Net (Yang & Ma 2019), faithful to the official code, with size options.

Input ``gathers_BSTR`` (batch, shots, time, receivers) — shots are channels — and output
``vel_B1ZX``. Blocks follow the official ``UnetModel``:

* ``ConvUnit``: 3×3 conv (padding 1) → BatchNorm → ReLU; a ``DoubleConv`` is two of them
  (``unetConv2``);
* ``Down``: DoubleConv then MaxPool(2, ceil_mode=True) (``unetDown``);
* ``Up``: ConvTranspose2d(k=2, s=2), the skip zero-padded (F.pad, split evenly) to the upsampled
  size, concatenation, DoubleConv (``unetUp``) -- computed without materialising the padding or the
  concatenation (:func:`conv_concat`; same parameters, same result);
* filters ``base · 2^i`` (64/128/256/512 and a 1024 centre at the paper configuration);
* the decoder output (400 × 304 for the paper's 400 × 301 input) is cropped to ``[1:1+nz, 1:1+nx]``
  and a final 1×1 conv gives one channel.

Skip modes (``skip``):

* ``"pooled"`` — faithful: the official code passes each ``unetDown``'s *pooled* output as the
  skip, so every skip is half the size of the tensor it joins and is mostly zero padding;
* ``"standard"`` — a textbook U-Net: the skip is the DoubleConv output before pooling.

Both have the same parameters (≈ 31.06 M at the paper configuration). When an input is smaller
than the output grid plus the crop offset (e.g. fewer time samples than depth cells), it is
zero-padded at the end of each axis so the decoder covers the output. Pure torch: no distributed
code; activation checkpointing is applied from outside (``hpcinv.train.parallel``).
"""

from __future__ import annotations

import math
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn


class ConvUnit(nn.Sequential):
    """3×3 conv → BatchNorm → ReLU (the unit the finest activation checkpointing recomputes).

    Called with a ``skip`` (the decoder's first unit), the conv runs over the channel concatenation
    ``[pad(skip), x]`` without building it: see :func:`conv_concat`.
    """

    def __init__(self, cin: int, cout: int, batchnorm: bool = True, kernel=3, stride=1, padding=1):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, padding)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, top: int = 0, left: int = 0) -> torch.Tensor:
        conv, *rest = self
        y = conv(x) if skip is None else conv_concat(cast(nn.Conv2d, conv), skip, x, top, left)  # built first
        for layer in rest:
            y = layer(y)
        return y


def conv_concat(conv: nn.Conv2d, skip: torch.Tensor, x: torch.Tensor, top: int, left: int) -> torch.Tensor:
    """``conv(cat([skip zero-padded into x's size at (top, left)], x))``, with neither the padded skip
    nor the concatenation ever stored.

    The conv is linear in its input channels, so it splits into a conv of ``x`` and one of the skip.
    The padded skip is zero outside its window, so its conv is non-zero only within one kernel radius
    of the window: the small skip's "full" convolution (padding 2r), added into that region. Autograd
    then keeps the small skip instead of a mostly-zero full-resolution copy (the faithful ``pooled``
    skips are a quarter of the size they are padded to) and no concatenation: at the finest decoder
    level that is most of the activation memory left under checkpointing (docs/SCALING.md).
    """
    assert isinstance(conv.padding, tuple)  # numeric padding (ConvUnit's is 1), not "same" / "valid"
    r = conv.padding[0]
    w_skip, w_x = conv.weight.split([skip.shape[1], x.shape[1]], dim=1)
    y = F.conv2d(x, w_x, conv.bias, padding=conv.padding)
    small = F.conv2d(skip, w_skip, None, padding=2 * r)  # covers rows top-r .. top+h+r-1 of y
    z0, x0 = top - r, left - r
    zs, xs = max(0, -z0), max(0, -x0)
    ze, xe = min(small.shape[2], y.shape[2] - z0), min(small.shape[3], y.shape[3] - x0)
    y[:, :, z0 + zs : z0 + ze, x0 + xs : x0 + xe] += small[:, :, zs:ze, xs:xe]
    return y


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, batchnorm: bool = True):
        super().__init__(ConvUnit(cin, cout, batchnorm), ConvUnit(cout, cout, batchnorm))


class Down(nn.Module):
    def __init__(self, cin: int, cout: int, batchnorm: bool = True):
        super().__init__()
        self.conv = DoubleConv(cin, cout, batchnorm)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled output, pre-pool features)."""
        features = self.conv(x)
        return self.pool(features), features


class Up(nn.Module):
    def __init__(self, cin: int, cout: int, batchnorm: bool = True):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.conv = DoubleConv(cin, cout, batchnorm)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The official ``unetUp``: ``conv(cat([F.pad(skip) split evenly to x's size, up(x)]))``."""
        x = self.up(x)
        dz, dx = x.shape[2] - skip.shape[2], x.shape[3] - skip.shape[3]
        if dz < 0 or dx < 0:  # a larger skip is cropped, as F.pad does (never here: pooling rounds up)
            skip = F.pad(skip, [min(0, dx // 2), min(0, (dx + 1) // 2), min(0, dz // 2), min(0, (dz + 1) // 2)])
            dz, dx = max(0, dz), max(0, dx)
        return self.conv[1](self.conv[0](x, skip, dz // 2, dx // 2))


class FCNVMB(nn.Module):
    def __init__(
        self,
        in_shots: int = 29,
        out_shape: tuple[int, int] = (201, 301),
        base_channels: int = 64,
        depth: int = 4,
        skip: Literal["pooled", "standard"] = "pooled",
        batchnorm: bool = True,
    ):
        super().__init__()
        if skip not in ("pooled", "standard"):
            raise ValueError(f"skip must be 'pooled' (faithful) or 'standard', got {skip!r}")
        if depth < 1 or base_channels < 1:
            raise ValueError(f"depth and base_channels must be >= 1, got {depth}, {base_channels}")
        self.in_shots, self.out_shape, self.skip, self.depth = in_shots, tuple(out_shape), skip, depth
        self.offset = 1  # the official crop [1:1+nz, 1:1+nx]
        filters = [base_channels * 2**i for i in range(depth + 1)]
        self.downs = nn.ModuleList(
            Down(cin, cout, batchnorm) for cin, cout in zip([in_shots, *filters[:-2]], filters[:-1], strict=True)
        )
        self.center = DoubleConv(filters[-2], filters[-1], batchnorm)
        self.ups = nn.ModuleList(Up(filters[i + 1], filters[i], batchnorm) for i in reversed(range(depth)))
        self.final = nn.Conv2d(filters[0], 1, 1)

    def encoder_modules(self) -> list[nn.Module]:
        return [*self.downs, self.center]

    def checkpoint_blocks(self) -> list[nn.Module]:
        """Modules that activation checkpointing may wrap, coarse to fine is up to the caller."""
        return [*self.downs, self.center, *self.ups]

    def _pad_input(self, x: torch.Tensor) -> torch.Tensor:
        need = [n + self.offset for n in self.out_shape]
        size = list(x.shape[2:])
        for axis in range(2):
            out = size[axis]
            for _ in range(self.depth):
                out = math.ceil(out / 2)
            while out * 2**self.depth < need[axis]:
                size[axis] += 1
                out = size[axis]
                for _ in range(self.depth):
                    out = math.ceil(out / 2)
        pad_t, pad_r = size[0] - x.shape[2], size[1] - x.shape[3]
        return F.pad(x, [0, pad_r, 0, pad_t]) if pad_t or pad_r else x

    def forward(self, gathers_BSTR: torch.Tensor) -> torch.Tensor:
        x = self._pad_input(gathers_BSTR)
        skips = []
        for down in self.downs:
            x, features = down(x)
            skips.append(x if self.skip == "pooled" else features)
        x = self.center(x)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(skip, x)
        nz, nx = self.out_shape
        x = x[:, :, self.offset : self.offset + nz, self.offset : self.offset + nx].contiguous()
        return self.final(x)
