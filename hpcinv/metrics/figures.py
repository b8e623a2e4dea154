"""Figures (matplotlib, Agg): true vs predicted velocity with a shared colour bar and their
difference, vertical profiles, and a shot gather."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from hpcinv.fileio import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def velocity_figure(
    true_ZX: np.ndarray | None,
    pred_ZX: np.ndarray,
    gather_TR: np.ndarray | None = None,
    dx_m: float = 1.0,
    dt_s: float = 1.0,
    title: str = "",
):
    """One figure: truth | prediction (shared colour bar) | difference | profiles | a shot gather.
    Without a truth (gathers-only data): the prediction and the gather."""
    pred_ZX = np.asarray(pred_ZX, dtype=np.float64)
    if true_ZX is None:
        return _prediction_only(pred_ZX, gather_TR, dx_m, dt_s, title)
    true_ZX = np.asarray(true_ZX, dtype=np.float64)
    nz, nx = true_ZX.shape
    extent = [0, (nx - 1) * dx_m / 1000, (nz - 1) * dx_m / 1000, 0]
    vmin, vmax = min(true_ZX.min(), pred_ZX.min()), max(true_ZX.max(), pred_ZX.max())
    ncols = 5 if gather_TR is not None else 4
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.6), constrained_layout=True)
    for ax, img, name in ((axes[0], true_ZX, "true"), (axes[1], pred_ZX, "predicted")):
        im = ax.imshow(img, cmap="jet", vmin=vmin, vmax=vmax, extent=extent, aspect="auto")
        ax.set(title=f"{name} velocity", xlabel="x (km)", ylabel="depth (km)")
    fig.colorbar(im, ax=axes[:2], label="m/s", shrink=0.9)
    diff = pred_ZX - true_ZX
    lim = float(np.abs(diff).max()) or 1.0
    im = axes[2].imshow(diff, cmap="seismic", vmin=-lim, vmax=lim, extent=extent, aspect="auto")
    axes[2].set(title="predicted - true", xlabel="x (km)")
    fig.colorbar(im, ax=axes[2], label="m/s", shrink=0.9)
    depth = np.arange(nz) * dx_m / 1000
    for frac, colour in ((0.25, "C0"), (0.5, "C1"), (0.75, "C2")):
        col = int(frac * (nx - 1))
        axes[3].plot(true_ZX[:, col], depth, color=colour, label=f"x={col * dx_m / 1000:.2f} km")
        axes[3].plot(pred_ZX[:, col], depth, color=colour, ls="--")
    axes[3].invert_yaxis()
    axes[3].set(title="profiles (solid true, dashed pred.)", xlabel="m/s", ylabel="depth (km)")
    axes[3].legend(fontsize=7)
    if gather_TR is not None:
        g = np.asarray(gather_TR, dtype=np.float64)
        clip = np.percentile(np.abs(g), 98) or 1.0
        nt, nr = g.shape
        axes[4].imshow(g, cmap="gray", vmin=-clip, vmax=clip, aspect="auto", extent=[0, nr - 1, (nt - 1) * dt_s, 0])
        axes[4].set(title="shot gather (input)", xlabel="receiver", ylabel="time (s)")
    if title:
        fig.suptitle(title)
    return fig


def _extent(shape, dx_m: float) -> list[float]:
    nz, nx = shape
    return [0, (nx - 1) * dx_m / 1000, (nz - 1) * dx_m / 1000, 0]


def _gather(ax, gather_TR: np.ndarray, dt_s: float) -> None:
    g = np.asarray(gather_TR, dtype=np.float64)
    clip = np.percentile(np.abs(g), 98) or 1.0
    nt, nr = g.shape
    ax.imshow(g, cmap="gray", vmin=-clip, vmax=clip, aspect="auto", extent=[0, nr - 1, (nt - 1) * dt_s, 0])
    ax.set(title="shot gather (input)", xlabel="receiver", ylabel="time (s)")


def _prediction_only(pred_ZX, gather_TR, dx_m, dt_s, title):
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6), constrained_layout=True)
    im = axes[0].imshow(pred_ZX, cmap="jet", extent=_extent(pred_ZX.shape, dx_m), aspect="auto")
    axes[0].set(title="velocity (no true model)", xlabel="x (km)", ylabel="depth (km)")
    fig.colorbar(im, ax=axes[0], label="m/s", shrink=0.9)
    if gather_TR is not None:
        _gather(axes[1], gather_TR, dt_s)
    if title:
        fig.suptitle(title)
    return fig


def refine_figure(
    true_ZX: np.ndarray | None,
    start_ZX: np.ndarray,
    refined_ZX: np.ndarray,
    history: np.ndarray,
    band_ends: list[int],
    dx_m: float,
    title: str = "",
):
    """truth (if any) | start | refined (shared colour bar) | refined − truth (or − start) | misfit vs iteration."""
    models = [("true", true_ZX)] if true_ZX is not None else []
    models += [("start", start_ZX), ("refined", refined_ZX)]
    models = [(name, np.asarray(m, dtype=np.float64)) for name, m in models]
    vmin = min(m.min() for _, m in models)
    vmax = max(m.max() for _, m in models)
    ncols = len(models) + 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.0 * ncols, 3.4), constrained_layout=True)
    extent = _extent(models[0][1].shape, dx_m)
    for ax, (name, m) in zip(axes, models, strict=False):
        im = ax.imshow(m, cmap="jet", vmin=vmin, vmax=vmax, extent=extent, aspect="auto")
        ax.set(title=f"{name} velocity", xlabel="x (km)", ylabel="depth (km)")
    fig.colorbar(im, ax=axes[: len(models)], label="m/s", shrink=0.9)
    reference = models[0] if true_ZX is not None else models[-2]
    diff = models[-1][1] - reference[1]
    lim = float(np.abs(diff).max()) or 1.0
    ax = axes[len(models)]
    im = ax.imshow(diff, cmap="seismic", vmin=-lim, vmax=lim, extent=extent, aspect="auto")
    ax.set(title=f"refined - {reference[0]}", xlabel="x (km)")
    fig.colorbar(im, ax=ax, label="m/s", shrink=0.9)
    ax = axes[-1]
    ax.semilogy(np.arange(1, len(history) + 1), history)
    for end in band_ends[:-1]:
        ax.axvline(end + 0.5, color="0.6", ls=":")
    ax.set(title="misfit of the band (dotted: next band)", xlabel="iteration", ylabel="relative misfit")
    if title:
        fig.suptitle(title)
    return fig


def models_figure(models: dict[str, np.ndarray], dx_m: float, column: int | None = None):
    """Velocity models side by side on one colour scale (a dashed line where profiles are drawn)."""
    named = [(name, np.asarray(m, dtype=np.float64)) for name, m in models.items()]
    vmin, vmax = min(m.min() for _, m in named), max(m.max() for _, m in named)
    fig, axes = plt.subplots(1, len(named), figsize=(4.4 * len(named), 3.4), constrained_layout=True, squeeze=False)
    for ax, (name, m) in zip(axes[0], named, strict=True):
        im = ax.imshow(m, cmap="jet", vmin=vmin, vmax=vmax, extent=_extent(m.shape, dx_m), aspect="auto")
        if column is not None:
            ax.axvline(column * dx_m / 1000, color="k", ls="--", lw=0.8)
        ax.set(title=name, xlabel="x (km)", ylabel="depth (km)")
    fig.colorbar(im, ax=axes[0].tolist(), label="m/s", shrink=0.9)
    return fig


def gathers_figure(observed_TR: np.ndarray, modelled: dict[str, np.ndarray], dt_s: float, title: str = ""):
    """A recorded shot beside each model's, on the recording's colour scale."""
    panels = [("recorded", np.asarray(observed_TR, dtype=np.float64))]
    panels += [(name, np.asarray(m, dtype=np.float64)) for name, m in modelled.items()]
    clip = float(np.percentile(np.abs(panels[0][1]), 98)) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.0), constrained_layout=True, sharey=True)
    for ax, (name, g) in zip(np.atleast_1d(axes), panels, strict=True):
        nt, nr = g.shape
        ax.imshow(g, cmap="gray", vmin=-clip, vmax=clip, aspect="auto", extent=[0, nr - 1, (nt - 1) * dt_s, 0])
        ax.set(title=name, xlabel="receiver")
    np.atleast_1d(axes)[0].set_ylabel("time (s)")
    if title:
        fig.suptitle(title)
    return fig


def semblance_figure(semblance_TV, dt_s: float, velocities, picks=None, curves: dict | None = None):
    """The semblance panel with the RMS picks (white circles) and each model's RMS velocity curve."""
    nt = semblance_TV.shape[0]
    fig, ax = plt.subplots(figsize=(4.8, 5.0), constrained_layout=True)
    ax.imshow(
        semblance_TV,
        cmap="viridis",
        aspect="auto",
        extent=(float(velocities[0]), float(velocities[-1]), (nt - 1) * dt_s, 0.0),
        vmin=0,
        vmax=1,
    )
    for i, (name, (t0, v)) in enumerate((curves or {}).items()):
        keep = t0 <= (nt - 1) * dt_s
        ax.plot(v[keep], t0[keep], color=f"C{i + 1}", lw=1.2, label=name)
    if picks is not None:
        ax.plot(picks.v_rms_mps, picks.t0_s, "o", mfc="none", mec="w", ms=7, label="picks")
    ax.set(title="semblance and RMS velocities", xlabel="RMS velocity (m/s)", ylabel="zero-offset time (s)")
    ax.set_xlim(velocities[0], velocities[-1])
    ax.legend(fontsize=7, loc="lower left")
    return fig


def profiles_figure(profiles: dict[str, np.ndarray], depth_m: np.ndarray, picks=None, x_m: float = 0.0):
    """Interval velocity against depth: each model's profile and, as steps, Dix's from the picks."""
    fig, ax = plt.subplots(figsize=(4.2, 5.0), constrained_layout=True)
    for i, (name, v) in enumerate(profiles.items()):
        ax.plot(v, depth_m / 1000, color=f"C{i + 1}", label=name)
    if picks is not None and len(picks.depth_m):
        tops = np.concatenate([[0.0], picks.depth_m])  # each layer drawn from its top to its base
        ax.plot(
            np.repeat(picks.v_interval_mps, 2),
            np.column_stack([tops[:-1], tops[1:]]).ravel() / 1000,
            color="k",
            ls="--",
            label="velocity analysis (Dix)",
        )
    ax.invert_yaxis()
    ax.set(title=f"profiles at x = {x_m / 1000:.2f} km", xlabel="interval velocity (m/s)", ylabel="depth (km)")
    ax.legend(fontsize=7)
    return fig


def close(fig) -> None:
    plt.close(fig)


def save(fig, path, dpi: int = 110) -> str:
    """Write ``fig`` to ``path`` (PNG) atomically (a full disk leaves no truncated image: one line
    instead), close it, return the path."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return str(path)
