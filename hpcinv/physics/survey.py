"""Acquisition geometry, source wavelet and time downsampling.

Grid indices are (z, x) = (depth row, column); deepwave's first model axis is depth. Positions in
the config are metres and are snapped to the nearest cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from deepwave.wavelets import ricker as _deepwave_ricker

from hpcinv.config import GridSection, SurveySection
from hpcinv.errors import HpcinvError


@dataclass(frozen=True)
class Geometry:
    """Cell indices of every source and receiver, in deepwave's layout."""

    source_cells: np.ndarray  # (shots, 2): (z, x)
    # (receivers, 2): the same cells for every shot; or (shots, receivers, 2): receivers that move
    # with each shot (a towed streamer)
    receiver_cells: np.ndarray

    @property
    def n_shots(self) -> int:
        return len(self.source_cells)

    @property
    def n_receivers(self) -> int:
        return self.receiver_cells.shape[-2]

    @property
    def moving(self) -> bool:
        return self.receiver_cells.ndim == 3

    def shots(self, index) -> Geometry:
        """The geometry of the shots ``index`` picks (their receivers too, when they move)."""
        index = np.asarray(index)
        return Geometry(self.source_cells[index], self.receiver_cells[index] if self.moving else self.receiver_cells)

    def torch_locations(self, n_models: int = 1, device: torch.device | str = "cpu"):
        """``source_locations`` (n_models·shots, 1, 2) and ``receiver_locations`` (…, R, 2) tensors."""
        src = torch.as_tensor(self.source_cells, dtype=torch.long, device=device)[:, None, :]
        rec = torch.as_tensor(self.receiver_cells, dtype=torch.long, device=device)
        rec = rec if self.moving else rec[None].expand(len(src), -1, -1)
        return src.repeat(n_models, 1, 1), rec.repeat(n_models, 1, 1).contiguous()


def _positions(explicit: list[float] | None, count: int, extent_m: float) -> np.ndarray:
    if explicit is not None:
        return np.asarray(explicit, dtype=np.float64)
    if count == 1:
        return np.array([extent_m / 2])
    return np.linspace(0.0, extent_m, count)


def _cells(name: str, positions_m: np.ndarray, dx_m: float, n_cells: int) -> np.ndarray:
    cells = np.rint(positions_m / dx_m).astype(np.int64)
    bad = (cells < 0) | (cells >= n_cells)
    if bad.any():
        first = float(np.asarray(positions_m)[bad][0])
        raise HpcinvError(
            f"{name} at {first:g} m is outside the grid; valid positions are 0 .. {(n_cells - 1) * dx_m:g} m"
        )
    return cells


def _distinct(rec_x: np.ndarray, nx: int, setting: str) -> None:
    if len(np.unique(rec_x)) != len(rec_x):
        raise HpcinvError(f"{len(rec_x)} receivers do not fit on distinct cells of a {nx}-column grid; use {setting}")


def make_geometry(survey: SurveySection, grid: GridSection) -> Geometry:
    """Sources and receivers on depth rows: evenly spaced across the surface or at given positions, or
    receivers at given offsets from each source (``receiver_offsets_m``: they move with the shot)."""
    extent_x = (grid.nx - 1) * grid.dx_m
    src_x_m = _positions(survey.source_x_m, survey.n_shots, extent_x)
    src_x = _cells("survey.source_x_m", src_x_m, grid.dx_m, grid.nx)
    src_z = _cells("survey.source_depth_m", np.array([survey.source_depth_m]), grid.dx_m, grid.nz)[0]
    rec_z = _cells("survey.receiver_depth_m", np.array([survey.receiver_depth_m]), grid.dx_m, grid.nz)[0]
    sources = np.stack([np.full_like(src_x, src_z), src_x], axis=1)
    if survey.receiver_offsets_m is not None:
        offsets = np.asarray(survey.receiver_offsets_m, dtype=np.float64)
        rec_x = np.stack(
            [_cells(f"the receivers of the shot at {x:g} m", x + offsets, grid.dx_m, grid.nx) for x in src_x_m]
        )
        _distinct(rec_x[0], grid.nx, "receiver offsets at least one cell (grid.dx_m) apart")
        return Geometry(source_cells=sources, receiver_cells=np.stack([np.full_like(rec_x, rec_z), rec_x], axis=-1))
    rec_x = _cells(
        "survey.receiver_x_m",
        _positions(survey.receiver_x_m, survey.n_receivers or grid.nx, extent_x),
        grid.dx_m,
        grid.nx,
    )
    _distinct(rec_x, grid.nx, f"survey.n_receivers <= {grid.nx}")
    return Geometry(source_cells=sources, receiver_cells=np.stack([np.full_like(rec_x, rec_z), rec_x], axis=1))


def peak_time_s(survey: SurveySection) -> float:
    return survey.peak_time_s if survey.peak_time_s is not None else 1.5 / survey.f0_hz


def ricker(survey: SurveySection, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Ricker wavelet of peak frequency ``f0_hz`` peaking at ``peak_time_s``, shape (nt,)."""
    return _deepwave_ricker(survey.f0_hz, survey.nt, survey.dt_s, peak_time_s(survey), dtype=dtype)


def source_wavelet(survey: SurveySection, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The survey's source wavelet, shape (nt,): ``wavelet_samples`` (zero-padded) when given, else the
    Ricker of ``f0_hz``."""
    if survey.wavelet_samples is None:
        return ricker(survey, dtype)
    out = torch.zeros(survey.nt, dtype=dtype)
    out[: len(survey.wavelet_samples)] = torch.tensor(survey.wavelet_samples, dtype=dtype)
    return out


def downsample_indices(nt: int, factor: int) -> np.ndarray:
    """Time samples kept: the middle sample of each complete block of ``factor`` (FCNVMB convention)."""
    return np.arange(nt // factor) * factor + factor // 2


def n_output_samples(survey: SurveySection) -> int:
    return survey.nt // survey.downsample


def mirror_asymmetry(source_cells_zx, receiver_cells_zx, nx: int) -> str | None:
    """Why a survey is not left-right symmetric on an ``nx``-column grid, or None when it is.

    On a symmetric survey (source i mirrored onto source S-1-i, receiver j onto receiver R-1-j, at
    the same depths) the acoustic wave equation makes flipping a model left-right exactly equal to
    reversing the shot order and the receivers of its gathers (:func:`mirror`).
    """
    if np.ndim(receiver_cells_zx) == 3:
        return "the receivers move with each shot (survey.receiver_offsets_m), so no shot has a mirror image"
    for name, cells in (("source", np.asarray(source_cells_zx)), ("receiver", np.asarray(receiver_cells_zx))):
        mirrored = (nx - 1 - cells[::-1, 1], cells[::-1, 0])
        if not (np.array_equal(mirrored[0], cells[:, 1]) and np.array_equal(mirrored[1], cells[:, 0])):
            bad = int(np.flatnonzero((mirrored[0] != cells[:, 1]) | (mirrored[1] != cells[:, 0]))[0])
            return (
                f"{name} {bad} at cell (z, x) = {tuple(int(c) for c in cells[bad])} has no mirror image at "
                f"({int(cells[len(cells) - 1 - bad, 0])}, {nx - 1 - int(cells[len(cells) - 1 - bad, 1])}) on "
                f"the {nx}-column grid (evenly spread positions are symmetric when the gaps between them "
                "are whole cells, e.g. n_shots - 1 divides nx - 1)"
            )
    return None


def mirror(gathers, velocity):
    """The mirror image of a sample on a symmetric survey: shots and receivers reversed (gathers
    ``(..., shots, time, receivers)``), the model flipped left-right (``(..., nz, nx)``)."""
    lib = torch if isinstance(gathers, torch.Tensor) else np
    if lib is torch:
        return gathers.flip(-3, -1), velocity.flip(-1)
    return np.flip(gathers, (-3, -1)), np.flip(velocity, -1)
