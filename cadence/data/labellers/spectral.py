"""Spectral labellers: PASE+'s regression targets that describe the spectrum of each frame.

- ``lps``: log power spectrum ``log(max(|STFT|^2, 1e-10))``, ``n_fft // 2 + 1`` channels;
- ``fbank``: log mel filter bank energies (:class:`~cadence.data.features.LogMel`), ``n_mels``;
- ``mfcc``: mel cepstrum (:class:`~cadence.data.features.MFCC`), ``n_mfcc`` (20 by default);
- ``gammatone``: log gammatone filter bank energies (see below), ``n_channels``.

Each has a ``*_long`` twin (``lps_long``, ...) that differs only in its default window:
200 ms instead of the short 25 ms (16 kHz and up) or 20 ms (below), PASE+'s long-context
targets. Every variant gives one frame per encoder frame (the hop is the encoder's
``stride``), the long window simply seeing more context around the same centre. (Its FFT
holds the whole window: ``lps_long`` has 1025 channels at 8 kHz, 2049 at 16 kHz.)

Framing: the analysis is that of :mod:`cadence.data.features` (reused, not re-implemented),
built with ``hop_length = stride``: a periodic Hann window of ``window_seconds`` in an
``n_fft``-point frame (default: the smallest power of two that holds the window). Those
modules centre their frame ``k`` on sample ``k * stride``; the encoder's frame ``t`` is
centred on ``t * stride + stride // 2``. So the waveform goes in behind ``stride - stride // 2``
zeros (silence: nothing of the signal is lost) and the module's frame ``t + 1`` is our frame
``t``.

Gammatone: weights on the power spectrum that approximate a 4th-order gammatone filter's
power response, ``(1 + ((f - fc) / b) ** 2) ** -4`` with ``b = 1.019 ERB(fc)`` and
``ERB(f) = 24.7 (4.37 f / 1000 + 1)`` Hz (Glasberg & Moore, 1990), unit gain at ``fc``; the
``n_channels`` centre frequencies are evenly spaced on the ERB-rate scale
``21.4 log10(1 + 0.00437 f)`` from ``f_min`` to ``f_max``. (Weights on the spectrum rather
than FIR filters: the same framing as the others, and no 4th-order impulse responses to
convolve at the sample rate.)

Normalization (``normalize``): ``"utterance"`` (default) brings each channel to zero mean and
unit variance over the utterance's valid frames; ``"none"`` keeps the log values.

>>> lps = LogPowerSpectrum(sample_rate=8000, stride=160)
>>> targets, target_lengths = lps(torch.randn(2, 1600), torch.tensor([1600, 900]))
>>> lps.size, targets.shape, target_lengths.tolist()  # 20 ms window, n_fft 256
(129, torch.Size([2, 129, 10]), [10, 5])
>>> LongGammatoneFilterbank(sample_rate=16000, stride=160).win_length  # 200 ms at 16 kHz
3200
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cadence.bounds import NonNegativeFloat, PositiveFloat, PositiveInt
from cadence.data.features import MFCC, LogMel, Spectrogram, in_float32
from cadence.data.labellers.framing import Labeller, Normalization, default_window_seconds, smallest_power_of_two
from cadence.registry import LABELLERS

__all__ = [
    "GammatoneFilterbank", "LogMelFilterbank", "LogPowerSpectrum", "LongGammatoneFilterbank", "LongLogMelFilterbank",
    "LongLogPowerSpectrum", "LongMelCepstrum", "MelCepstrum", "erb_rate", "gammatone_weights",
]

LONG_WINDOW_SECONDS = 0.2  # PASE+'s long-context targets: 200 ms around each frame
_POWER_FLOOR = 1e-10  # before the log: silence (exact zeros) gives log(1e-10), not -inf


class SpectralLabeller(Labeller):
    """The shared framing: ``window_seconds`` and ``n_fft`` settings, and an ``analysis``
    module of :mod:`cadence.data.features` put on the encoder's frame grid."""

    analysis: nn.Module

    def __init__(self, sample_rate: int, stride: int, window_seconds: float | None, n_fft: int | None,
                 normalize: Normalization) -> None:
        super().__init__(sample_rate, stride, normalize)
        self.window_seconds = default_window_seconds(sample_rate) if window_seconds is None else window_seconds
        self.win_length = self.window_samples("window_seconds", self.window_seconds)
        if n_fft is not None and n_fft < self.win_length:
            self.invalid("n_fft", n_fft, f"is shorter than the window ({self.win_length} samples: "
                         f"window_seconds={self.window_seconds} at {sample_rate} Hz)",
                         f"give n_fft >= {self.win_length}, or leave it out for the next power of two")
        self.n_fft = smallest_power_of_two(self.win_length) if n_fft is None else n_fft

    def framing(self) -> dict[str, int]:
        """The keyword arguments that build a :mod:`cadence.data.features` module on this framing."""
        return {"sample_rate": self.sample_rate, "n_fft": self.n_fft, "win_length": self.win_length,
                "hop_length": self.stride}

    def band(self, f_min: float, f_max: float | None) -> tuple[float, float]:
        """``(f_min, f_max)`` checked against each other and Nyquist; ``f_max`` None: Nyquist."""
        nyquist = self.sample_rate / 2.0
        if f_max is not None and f_max > nyquist:
            self.invalid("f_max", f_max, f"is above Nyquist ({nyquist:g} Hz at {self.sample_rate} Hz)",
                         f"give f_max <= {nyquist:g} or leave it out")
        f_max = nyquist if f_max is None else f_max
        if f_min >= f_max:
            self.invalid("f_min", f_min, f"is not below f_max ({f_max:g} Hz)", f"give f_min < {f_max:g}")
        return f_min, f_max

    @in_float32
    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        waveforms, lengths = self.prepared(waveforms, lengths)  # [B, S], [B]
        empty = self.nothing_to_analyse(waveforms, lengths)
        if empty is not None:
            return empty
        # Shift by half a frame: the analysis's frame k + 1 is then centred on t * stride + stride // 2.
        lead = self.stride - self.stride // 2
        values, _ = self.analysis(F.pad(waveforms, (lead, 0)), lengths + lead)  # [B, C, >= T + 1]
        count = waveforms.shape[-1] // self.stride
        return self.finished(self.targets_from(values[..., 1 : 1 + count]), lengths)  # [B, size, T]

    def targets_from(self, values: torch.Tensor) -> torch.Tensor:
        """The analysis's frames ``[B, C, T]`` as targets (the identity, unless overridden)."""
        return values

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window_seconds={self.window_seconds}, n_fft={self.n_fft}, size={self.size}"


@LABELLERS.register("lps")
class LogPowerSpectrum(SpectralLabeller):
    """Log power spectrum ``[B, n_fft // 2 + 1, T]``: ``log(max(|STFT|^2, 1e-10))``."""

    registered = "lps"

    def __init__(self, sample_rate: int, stride: int, window_seconds: PositiveFloat | None = None,
                 n_fft: PositiveInt | None = None, normalize: Normalization = "utterance") -> None:
        super().__init__(sample_rate, stride, window_seconds, n_fft, normalize)
        self.analysis = Spectrogram(**self.framing(), power=2.0)
        self.size = self.n_fft // 2 + 1

    def targets_from(self, values: torch.Tensor) -> torch.Tensor:
        return torch.log(values.clamp_min(_POWER_FLOOR))


@LABELLERS.register("lps_long")
class LongLogPowerSpectrum(LogPowerSpectrum):
    """:class:`LogPowerSpectrum` over a 200 ms window by default."""

    registered = "lps_long"

    def __init__(self, sample_rate: int, stride: int, window_seconds: PositiveFloat = LONG_WINDOW_SECONDS,
                 n_fft: PositiveInt | None = None, normalize: Normalization = "utterance") -> None:
        super().__init__(sample_rate, stride, window_seconds, n_fft, normalize)


@LABELLERS.register("fbank")
class LogMelFilterbank(SpectralLabeller):
    """Log mel filter bank energies ``[B, n_mels, T]``: :class:`~cadence.data.features.LogMel`."""

    registered = "fbank"

    def __init__(self, sample_rate: int, stride: int, window_seconds: PositiveFloat | None = None,
                 n_fft: PositiveInt | None = None, n_mels: PositiveInt = 40, f_min: NonNegativeFloat = 0.0,
                 f_max: PositiveFloat | None = None, normalize: Normalization = "utterance") -> None:
        super().__init__(sample_rate, stride, window_seconds, n_fft, normalize)
        f_min, f_max = self.band(f_min, f_max)
        self.analysis = LogMel(**self.framing(), n_mels=n_mels, f_min=f_min, f_max=f_max)
        self.size = n_mels


@LABELLERS.register("fbank_long")
class LongLogMelFilterbank(LogMelFilterbank):
    """:class:`LogMelFilterbank` over a 200 ms window by default."""

    registered = "fbank_long"

    def __init__(self, sample_rate: int, stride: int, window_seconds: PositiveFloat = LONG_WINDOW_SECONDS,
                 n_fft: PositiveInt | None = None, n_mels: PositiveInt = 40, f_min: NonNegativeFloat = 0.0,
                 f_max: PositiveFloat | None = None, normalize: Normalization = "utterance") -> None:
        super().__init__(sample_rate, stride, window_seconds, n_fft, n_mels, f_min, f_max, normalize)


@LABELLERS.register("mfcc")
class MelCepstrum(SpectralLabeller):
    """Mel-frequency cepstral coefficients ``[B, n_mfcc, T]``: :class:`~cadence.data.features.MFCC`
    (20 coefficients by default, as PASE+)."""

    registered = "mfcc"

    def __init__(self, sample_rate: int, stride: int, window_seconds: PositiveFloat | None = None,
                 n_fft: PositiveInt | None = None, n_mels: PositiveInt = 40, n_mfcc: PositiveInt = 20,
                 f_min: NonNegativeFloat = 0.0, f_max: PositiveFloat | None = None,
                 normalize: Normalization = "utterance") -> None:
        super().__init__(sample_rate, stride, window_seconds, n_fft, normalize)
        f_min, f_max = self.band(f_min, f_max)
        if n_mfcc > n_mels:
            self.invalid("n_mfcc", n_mfcc, f"is more than n_mels ({n_mels}): the DCT of n_mels bands has n_mels coefficients",
                         f"give n_mfcc <= {n_mels} or more n_mels")
        self.analysis = MFCC(**self.framing(), n_mels=n_mels, n_mfcc=n_mfcc, f_min=f_min, f_max=f_max)
        self.size = n_mfcc


@LABELLERS.register("mfcc_long")
class LongMelCepstrum(MelCepstrum):
    """:class:`MelCepstrum` over a 200 ms window by default."""

    registered = "mfcc_long"

    def __init__(self, sample_rate: int, stride: int, window_seconds: PositiveFloat = LONG_WINDOW_SECONDS,
                 n_fft: PositiveInt | None = None, n_mels: PositiveInt = 40, n_mfcc: PositiveInt = 20,
                 f_min: NonNegativeFloat = 0.0, f_max: PositiveFloat | None = None,
                 normalize: Normalization = "utterance") -> None:
        super().__init__(sample_rate, stride, window_seconds, n_fft, n_mels, n_mfcc, f_min, f_max, normalize)


def erb_rate(frequencies: np.ndarray) -> np.ndarray:
    """Glasberg & Moore's ERB-rate scale (the number of ERBs below ``frequencies`` Hz)."""
    return 21.4 * np.log10(1.0 + 0.00437 * np.asarray(frequencies, dtype=np.float64))


def erb_rate_to_hz(rates: np.ndarray) -> np.ndarray:
    """Inverse of :func:`erb_rate`."""
    return (10.0 ** (np.asarray(rates, dtype=np.float64) / 21.4) - 1.0) / 0.00437


def gammatone_weights(sample_rate: int, n_fft: int, n_channels: int, f_min: float, f_max: float) -> tuple[np.ndarray, np.ndarray]:
    """``(weights [n_channels, n_fft // 2 + 1], centre frequencies [n_channels])``: each row the
    power response of a 4th-order gammatone filter at the spectrum's bins (see the module docstring).

    >>> weights, centres = gammatone_weights(8000, 256, n_channels=4, f_min=100.0, f_max=4000.0)
    >>> weights.shape, centres.round().tolist()
    ((4, 129), [100.0, 542.0, 1576.0, 4000.0])
    """
    centres = erb_rate_to_hz(np.linspace(erb_rate(f_min), erb_rate(f_max), n_channels))  # [C]
    bandwidths = 1.019 * 24.7 * (4.37 * centres / 1000.0 + 1.0)  # [C], 1.019 ERB
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)  # [bins]
    detuning = (bins[None, :] - centres[:, None]) / bandwidths[:, None]  # [C, bins]
    return (1.0 + detuning**2) ** -4.0, centres


@LABELLERS.register("gammatone")
class GammatoneFilterbank(SpectralLabeller):
    """Log gammatone filter bank energies ``[B, n_channels, T]``: ``log(max(weights @ |STFT|^2, 1e-10))``."""

    registered = "gammatone"

    def __init__(self, sample_rate: int, stride: int, window_seconds: PositiveFloat | None = None,
                 n_fft: PositiveInt | None = None, n_channels: PositiveInt = 40, f_min: PositiveFloat = 100.0,
                 f_max: PositiveFloat | None = None, normalize: Normalization = "utterance") -> None:
        super().__init__(sample_rate, stride, window_seconds, n_fft, normalize)
        f_min, f_max = self.band(f_min, f_max)
        self.analysis = Spectrogram(**self.framing(), power=2.0)
        weights, centres = gammatone_weights(sample_rate, self.n_fft, n_channels, f_min, f_max)
        # Derived from the settings, so not saved in checkpoints (as the features' filterbanks).
        self.register_buffer("weights", torch.from_numpy(weights).float(), persistent=False)  # [C, bins]
        self.centre_frequencies = centres.tolist()
        self.size = n_channels

    def targets_from(self, values: torch.Tensor) -> torch.Tensor:
        energies = torch.matmul(self.weights.to(values.dtype), values)  # [B, C, T]
        return torch.log(energies.clamp_min(_POWER_FLOOR))


@LABELLERS.register("gammatone_long")
class LongGammatoneFilterbank(GammatoneFilterbank):
    """:class:`GammatoneFilterbank` over a 200 ms window by default."""

    registered = "gammatone_long"

    def __init__(self, sample_rate: int, stride: int, window_seconds: PositiveFloat = LONG_WINDOW_SECONDS,
                 n_fft: PositiveInt | None = None, n_channels: PositiveInt = 40, f_min: PositiveFloat = 100.0,
                 f_max: PositiveFloat | None = None, normalize: Normalization = "utterance") -> None:
        super().__init__(sample_rate, stride, window_seconds, n_fft, n_channels, f_min, f_max, normalize)
