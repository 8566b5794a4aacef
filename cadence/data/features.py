"""Acoustic features as ``nn.Module``s, so they run on the accelerator on padded batches.

:class:`LogMel` matches ``librosa.feature.melspectrogram(center=True, pad_mode="constant",
power=2.0, window="hann")`` with a Slaney mel filterbank, followed by ``log(mel + 1e-6)``;
tests check the numbers against librosa.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LogMel", "hz_to_mel", "mel_filterbank", "mel_to_hz"]

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


class LogMel(nn.Module):
    """Log mel spectrogram of padded waveforms.

    Shapes: ``waveforms [B, samples]`` float, ``lengths [B]`` samples (int) ->
    ``features [B, n_mels, frames]``, ``frame_lengths [B]`` int64 with
    ``frames = 1 + samples // hop_length`` (for even ``n_fft``).

    Definition: each waveform is padded with ``n_fft // 2`` zeros on each side
    (center=True, constant padding); frames every ``hop_length`` samples are windowed with a
    periodic Hann window of ``win_length`` samples centred in ``n_fft``; the power spectrum
    ``|STFT|^2`` goes through :func:`mel_filterbank`; the result is ``log(mel + log_offset)``.

    Padding never leaks: samples beyond ``lengths`` are zeroed before the STFT, so an
    utterance gives the same valid frames alone or in any batch; and frames beyond
    ``frame_lengths`` are set to 0, so statistics pooled over padded frames (e.g. a masked
    mean) see no padding values.

    The window and filterbank are non-persistent buffers: they follow ``.to(device)`` but are
    not saved in checkpoints, since they are derived from the constructor arguments.

    Example:

        >>> features, frame_lengths = LogMel()(torch.zeros(2, 8000), torch.tensor([8000, 4000]))
        >>> features.shape, frame_lengths.tolist()
        (torch.Size([2, 40, 101]), [101, 51])
    """

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        n_fft: int = 256,
        win_length: int = 200,
        hop_length: int = 80,
        n_mels: int = 40,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_offset: float = 1e-6,
    ) -> None:
        super().__init__()
        f_max = sample_rate / 2.0 if f_max is None else f_max
        if not 0 < win_length <= n_fft:
            raise ValueError(f"win_length must be in 1..n_fft={n_fft}, got {win_length}")
        if hop_length <= 0 or n_mels <= 0:
            raise ValueError(f"hop_length and n_mels must be positive, got {hop_length} and {n_mels}")
        if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min} f_max={f_max}")
        if log_offset <= 0:
            raise ValueError(f"log_offset must be positive, got {log_offset}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max
        self.log_offset = log_offset

        # The Hann window is centred in an n_fft frame, zeros either side (as librosa and torch do).
        window = torch.zeros(n_fft, dtype=torch.float64)
        left = (n_fft - win_length) // 2
        window[left : left + win_length] = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        filterbank = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max))
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("filterbank", filterbank.float(), persistent=False)  # [n_mels, n_fft // 2 + 1]

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of frames for waveforms of ``lengths`` samples."""
        padding = self.n_fft // 2
        return 1 + torch.div(lengths + 2 * padding - self.n_fft, self.hop_length, rounding_mode="floor")

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if waveforms.dim() != 2:
            raise ValueError(f"LogMel expects waveforms [batch, samples], got shape {tuple(waveforms.shape)}")
        batch, samples = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.int64, device=waveforms.device)
        lengths = lengths.to(device=waveforms.device, dtype=torch.int64)

        positions = torch.arange(samples, device=waveforms.device)
        waveforms = waveforms.masked_fill(positions[None, :] >= lengths[:, None], 0.0)  # [B, samples]
        padding = self.n_fft // 2
        padded = F.pad(waveforms, (padding, padding), mode="constant", value=0.0)
        window = self.window.to(waveforms.dtype)
        spectrum = torch.stft(
            padded,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=window,
            center=False,
            return_complex=True,
        )  # [B, n_fft // 2 + 1, frames]
        power = spectrum.real.square() + spectrum.imag.square()
        mel = torch.matmul(self.filterbank.to(power.dtype), power)  # [B, n_mels, frames]
        features = torch.log(mel + self.log_offset)

        frame_lengths = self.frame_lengths(lengths)
        frames = torch.arange(features.shape[-1], device=features.device)
        features = features.masked_fill(frames[None, None, :] >= frame_lengths[:, None, None], 0.0)
        return features, frame_lengths

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}"
        )
