"""The source wavelet of recorded data, estimated by least squares (after Pratt 1999): the data are
linear in the wavelet, so gathers M modelled with a reference wavelet w₀ in a model close to the
earth's and the recorded ones O give the filter f minimising ‖W (f ∗ M − O)‖² over every trace (W a
window on the arrivals the model explains), and the wavelet that best explains the recording is
w = f ∗ w₀. For the direct wave, water alone is such a model (:func:`estimate_from_direct_wave`)."""

from __future__ import annotations

import numpy as np

from hpcinv.errors import HpcinvError


def estimate_wavelet(
    observed_STR: np.ndarray,
    modelled_STR: np.ndarray,
    reference_T: np.ndarray,
    *,
    weights_STR: np.ndarray | None = None,
    max_shift: int = 50,
    damping: float = 1e-3,
    length: int | None = None,
) -> np.ndarray:
    """The wavelet (same length and sampling as ``reference_T``) that, in place of ``reference_T``, makes
    ``modelled_STR`` closest to ``observed_STR`` in the least-squares sense, the misfit weighted by
    ``weights_STR`` (e.g. a window around the early arrivals). Solved in time: the filter f of lags
    −``max_shift`` .. ``max_shift`` samples minimising ‖W (f ∗ M − O)‖² (a window does not commute with a
    filter, so a frequency-by-frequency division would not minimise it), with Tikhonov ``damping``
    relative to the mean diagonal; the wavelet is f ∗ ``reference_T``. ``length``: the wavelet is held
    to zero from that sample on (a window constrains only the part of the wavelet it sees)."""
    observed = np.asarray(observed_STR, dtype=np.float64)
    modelled = np.asarray(modelled_STR, dtype=np.float64)
    if observed.shape != modelled.shape:
        raise HpcinvError(f"observed {list(observed.shape)} and modelled {list(modelled.shape)} gathers differ")
    weights = np.ones_like(observed) if weights_STR is None else np.broadcast_to(weights_STR, observed.shape)
    live = weights.any(axis=1)  # (S, R): the traces the weights reach
    o = (observed * weights).transpose(0, 2, 1)[live]  # (traces, T)
    m = modelled.transpose(0, 2, 1)[live]
    w = weights.transpose(0, 2, 1)[live]
    nt = o.shape[1]
    lags = np.arange(-max_shift, max_shift + 1)
    shifted = np.zeros((len(lags), *m.shape))
    for i, lag in enumerate(lags):  # M delayed by lag samples, then weighted
        if lag >= 0:
            shifted[i, :, lag:] = m[:, : nt - lag]
        else:
            shifted[i, :, :lag] = m[:, -lag:]
    shifted = (shifted * w).reshape(len(lags), -1)
    normal = shifted @ shifted.T
    if not np.trace(normal) > 0:
        raise HpcinvError("the modelled gathers are all zeros where the estimate looks: nothing to match")
    rhs = shifted @ o.ravel()
    reference = np.asarray(reference_T, dtype=np.float64)
    convolve = np.zeros((len(reference), len(lags)))  # the wavelet = convolve @ f
    for i, lag in enumerate(lags):
        if lag >= 0:
            convolve[lag:, i] = reference[: len(reference) - lag]
        else:
            convolve[:lag, i] = reference[-lag:]
    scale = np.trace(normal) / len(lags)
    system = normal + damping * scale * np.eye(len(lags))
    if length is not None:
        tail = convolve[length:]
        system += 1e3 * scale / max(float(np.trace(tail.T @ tail)) / len(lags), 1e-30) * (tail.T @ tail)
    f = np.linalg.solve(system, rhs)
    return (convolve @ f).astype(np.float32)


def direct_wave_window(offsets_SR: np.ndarray, nt: int, dt_s: float, v_water: float, near_m: float, after_s: float):
    """(shots, time, receivers) weights around the direct wave of the receivers within ``near_m`` of
    their shot: from 0.05 s before |offset| / ``v_water`` to ``after_s`` after it, cosine-tapered over
    0.02 s (at near offsets in deep water it arrives well before the sea-floor reflection)."""
    t = np.arange(nt)[None, :, None] * dt_s
    arrival = np.abs(offsets_SR)[:, None, :] / v_water
    inside = np.minimum(t - (arrival - 0.05), (arrival + after_s) - t)
    weights = 0.5 - 0.5 * np.cos(np.pi * np.clip(inside / 0.02, 0.0, 1.0))
    return weights * (np.abs(offsets_SR) <= near_m)[:, None, :]


def estimate_from_direct_wave(cfg, observed_STR: np.ndarray, *, near_m: float = 1000.0, after_s: float = 0.2):
    """The source wavelet of a marine recording from its direct wave: the recording (as the dataset's
    ``cfg`` conditions it, without mute or gain) against a model of water only
    (``velocity.synthetic.water_velocity_mps``, with the survey's free surface, depths and a Ricker of
    ``f0_hz`` as the reference), both weighted by :func:`direct_wave_window`. Needs no velocity below the
    sea floor; the wavelet is taken to end ``after_s`` after its onset (what the window sees). The window
    must end before the sea-floor reflection at those offsets. Returns the wavelet and what to record
    about the estimate."""
    import torch

    from hpcinv.field.condition import geometry_offsets
    from hpcinv.physics.forward import simulate_config
    from hpcinv.physics.survey import make_geometry, peak_time_s, ricker

    v_water = cfg.velocity.synthetic.water_velocity_mps
    dt = cfg.survey.dt_s * cfg.survey.downsample
    offsets = geometry_offsets(make_geometry(cfg.survey, cfg.grid), cfg.grid.dx_m)
    weights = direct_wave_window(offsets, observed_STR.shape[1], dt, v_water, near_m, after_s)
    if not weights.any():
        raise HpcinvError(
            f"no receiver lies within {near_m:g} m of its shot: the direct wave cannot be windowed to estimate "
            f"the wavelet (the nearest offset is {np.abs(offsets).min():g} m)"
        )
    reference_cfg = cfg.model_copy(update={"survey": cfg.survey.model_copy(update={"wavelet_samples": None})})
    water = np.full((cfg.grid.nz, cfg.grid.nx), v_water, dtype=np.float32)
    modelled = simulate_config(water, reference_cfg, dtype=torch.float64).numpy()
    reference = ricker(cfg.survey).numpy()
    # lags from the reference's peak back to time zero, to 0.1 s later
    max_shift = int(np.ceil((peak_time_s(cfg.survey) + 0.1) / dt))
    wavelet = estimate_wavelet(
        observed_STR, modelled, reference, weights_STR=weights, max_shift=max_shift, length=int(after_s / dt)
    )
    given = cfg.model_copy(update={"survey": cfg.survey.model_copy(update={"wavelet_samples": wavelet.tolist()})})
    fitted = simulate_config(water, given, dtype=torch.float64).numpy()
    norm = float(np.linalg.norm(observed_STR * weights))
    return wavelet, {
        "method": "direct wave: water-only model, least squares",
        "water_velocity_mps": v_water,
        "near_m": near_m,
        "window_s": [-0.05, after_s],
        "traces": int((np.abs(offsets) <= near_m).sum()),
        "window_misfit": float(np.linalg.norm((fitted - observed_STR) * weights) / norm),
    }
