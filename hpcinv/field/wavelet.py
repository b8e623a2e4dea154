"""The source wavelet of recorded data, estimated by least squares (Pratt 1999): the data are linear in
the wavelet, so gathers modelled with a reference wavelet w₀ in a model close to the earth's, M(f),
and the recorded ones, O(f), give the filter F(f) = Σ M̄ O / (Σ |M|² + ε) over every trace that
turns w₀ into the wavelet that best explains the recording: w = F ∗ w₀. Near the surface, where the
direct wave and the sea-floor reflection dominate, a water layer over a half-space is such a model."""

from __future__ import annotations

import numpy as np

from hpcinv.errors import HpcinvError


def estimate_wavelet(
    observed_STR: np.ndarray,
    modelled_STR: np.ndarray,
    reference_T: np.ndarray,
    *,
    weights_STR: np.ndarray | None = None,
    damping: float = 1e-3,
) -> np.ndarray:
    """The wavelet (same length and sampling as ``reference_T``) that, in place of ``reference_T``, makes
    ``modelled_STR`` closest to ``observed_STR`` in the least-squares sense; ``weights_STR`` (e.g. a
    window around the early arrivals) applies to both; ``damping`` is ε relative to the largest
    Σ |M|² (it keeps frequencies the model does not excite from blowing up)."""
    observed = np.asarray(observed_STR, dtype=np.float64)
    modelled = np.asarray(modelled_STR, dtype=np.float64)
    if observed.shape != modelled.shape:
        raise HpcinvError(f"observed {list(observed.shape)} and modelled {list(modelled.shape)} gathers differ")
    if weights_STR is not None:
        observed, modelled = observed * weights_STR, modelled * weights_STR
    nt = observed.shape[1]
    n = 2 * nt  # zero-padded: the filter is a convolution, not a circular one
    o = np.fft.rfft(observed, n=n, axis=1)
    m = np.fft.rfft(modelled, n=n, axis=1)
    power = (np.abs(m) ** 2).sum(axis=(0, 2))
    if not power.max() > 0:
        raise HpcinvError("the modelled gathers are all zeros where the estimate looks: nothing to match")
    filt = (np.conj(m) * o).sum(axis=(0, 2)) / (power + damping * power.max())
    wavelet = np.fft.irfft(filt * np.fft.rfft(np.asarray(reference_T, dtype=np.float64), n=n), n=n)
    return wavelet[: len(reference_T)].astype(np.float32)
