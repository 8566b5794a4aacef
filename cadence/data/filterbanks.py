"""The fixed linear maps behind the features: the Slaney mel filterbank and the DCT-II.

They are computed once, in float64 numpy, when a feature module is built; the modules keep
them as non-persistent buffers (derived from the constructor arguments, so not checkpointed).

Example:

    >>> mel_filterbank(8000, 256, n_mels=40, f_min=0.0, f_max=4000.0).shape
    (40, 129)
    >>> basis = dct_matrix(13, 40)
    >>> basis.shape, bool(np.allclose(basis @ basis.T, np.eye(13)))  # orthonormal rows
    ((13, 40), True)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["dct_matrix", "hz_to_mel", "mel_filterbank", "mel_to_hz"]

# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above it
# (27 mels per factor 6.4 in frequency).
_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _LINEAR_HZ_PER_MEL
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa's ``htk=False``)."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    linear = frequencies / _LINEAR_HZ_PER_MEL
    logarithmic = _BREAK_MEL + np.log(np.maximum(frequencies, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return np.where(frequencies >= _BREAK_HZ, logarithmic, linear)


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    linear = mels * _LINEAR_HZ_PER_MEL
    logarithmic = _BREAK_HZ * np.exp(_LOG_STEP * (np.maximum(mels, _BREAK_MEL) - _BREAK_MEL))
    return np.where(mels >= _BREAK_MEL, logarithmic, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular filters ``[n_mels, n_fft // 2 + 1]`` on the Slaney scale, Slaney-normalised.

    Filter ``m`` rises from edge ``m`` to peak ``m + 1`` and falls to edge ``m + 2``, the
    ``n_mels + 2`` edges being evenly spaced in mels between ``f_min`` and ``f_max``. Each
    filter is scaled by ``2 / (upper edge - lower edge in Hz)`` so that every filter has the
    same area (constant energy per band, whatever its width).
    """
    bin_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, peak, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bin_hz[None, :] - lower) / (peak - lower)
    falling = (upper - bin_hz[None, :]) / (upper - peak)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (upper - lower))


def dct_matrix(n_outputs: int, n_inputs: int) -> np.ndarray:
    """First ``n_outputs`` rows ``[n_outputs, n_inputs]`` of the orthonormal DCT-II.

    Row ``k`` is ``scale_k * cos(pi * k * (2 n + 1) / (2 n_inputs))`` with
    ``scale_0 = sqrt(1 / n_inputs)`` and ``scale_k = sqrt(2 / n_inputs)`` otherwise, so the
    full square matrix is orthogonal (scipy's ``dct(type=2, norm="ortho")``).
    """
    if not 0 < n_outputs <= n_inputs:
        raise ValueError(f"need 0 < n_outputs <= n_inputs, got {n_outputs} and {n_inputs}")
    k = np.arange(n_outputs, dtype=np.float64)[:, None]
    n = np.arange(n_inputs, dtype=np.float64)[None, :]
    basis = np.cos(math.pi * k * (2.0 * n + 1.0) / (2.0 * n_inputs)) * math.sqrt(2.0 / n_inputs)
    basis[0] *= math.sqrt(0.5)
    return basis
