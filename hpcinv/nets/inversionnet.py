"""InversionNet (Wu & Lin 2019), faithful to OpenFWI's implementation, generalised in shape.

Input ``gathers_BSTR`` (batch, sources, time, receivers), output ``vel_B1ZX`` in [-1, 1] (Tanh).
At OpenFWI's shape (5 × 1000 × 70 → 70 × 70) the layers are exactly OpenFWI's: an encoder of
(7,1)/(3,1) convolutions striding over time, then 3×3 blocks striding over both axes to an 8 × 9
map, an (8, 9) convolution to a 512-d latent; a decoder of transposed convolutions 1 → 5 → 10 → 20
→ 40 → 80, a centre crop to 70 × 70 and a 3×3 conv + BN + Tanh head. BN + LeakyReLU(0.2)
throughout (≈ 24.4 M parameters).

For other shapes the latent kernel is the encoder's actual final map size, and the decoder adds ×2
stages (at the last width) until it covers the output before the centre crop. Pure torch.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(cin: int, cout: int, kernel=3, stride=1, padding=1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)
    )


def deconv_block(cin: int, cout: int, kernel=2, stride=2, padding=0) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)
    )


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


class InversionNet(nn.Module):
    def __init__(
        self,
        in_sources: int = 5,
        in_shape: tuple[int, int] = (1000, 70),
        out_shape: tuple[int, int] = (70, 70),
        dims: tuple[int, ...] = (32, 64, 128, 256, 512),
    ):
        super().__init__()
        if len(dims) != 5:
            raise ValueError(f"dims must hold 5 widths, got {dims}")
        d1, d2, d3, d4, d5 = dims
        self.out_shape = tuple(out_shape)
        t, r = in_shape
        enc: list[nn.Module] = []

        def time_block(cin, cout, kernel, stride, pad):
            nonlocal t
            enc.append(conv_block(cin, cout, (kernel, 1), (stride, 1), (pad, 0)))
            t = _conv_out(t, kernel, stride, pad)

        def square_block(cin, cout, stride):
            nonlocal t, r
            enc.append(conv_block(cin, cout, 3, stride, 1))
            t, r = _conv_out(t, 3, stride, 1), _conv_out(r, 3, stride, 1)

        time_block(in_sources, d1, 7, 2, 3)
        time_block(d1, d2, 3, 2, 1)
        time_block(d2, d2, 3, 1, 1)
        time_block(d2, d2, 3, 2, 1)
        time_block(d2, d2, 3, 1, 1)
        time_block(d2, d3, 3, 2, 1)
        time_block(d3, d3, 3, 1, 1)
        for cin, cout in ((d3, d3), (d3, d4), (d4, d4)):
            square_block(cin, cout, 2)
            square_block(cout, cout, 1)
        if t < 1 or r < 1:
            raise ValueError(f"input {in_shape} is too small for InversionNet's encoder")
        enc.append(conv_block(d4, d5, (t, r), 1, 0))  # (8, 9) at OpenFWI's shape
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [deconv_block(d5, d5, 5, 1, 0), conv_block(d5, d5)]
        size = 5
        for cin, cout in ((d5, d4), (d4, d3), (d3, d2), (d2, d1)):
            dec += [deconv_block(cin, cout, 4, 2, 1), conv_block(cout, cout)]
            size *= 2
        while size < max(out_shape):
            dec += [deconv_block(d1, d1, 4, 2, 1), conv_block(d1, d1)]
            size *= 2
        self.decoder = nn.Sequential(*dec)
        self.head = nn.Sequential(nn.Conv2d(d1, 1, 3, 1, 1), nn.BatchNorm2d(1), nn.Tanh())

    def encoder_modules(self) -> list[nn.Module]:
        return [self.encoder]

    def checkpoint_blocks(self) -> list[nn.Module]:
        return [*self.encoder, *self.decoder]

    def forward(self, gathers_BSTR: torch.Tensor) -> torch.Tensor:
        x = self.decoder(self.encoder(gathers_BSTR))
        nz, nx = self.out_shape
        top, left = (x.shape[2] - nz) // 2, (x.shape[3] - nx) // 2
        x = x[:, :, top : top + nz, left : left + nx]  # OpenFWI: F.pad(x, [-5, -5, -5, -5]) from 80 to 70
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
