"""Acoustic features as ``nn.Module``s, so they run on the accelerator on padded batches.

Every module maps ``(waveforms [B, samples], lengths [B] samples)`` to
``(features [B, num_features, frames], frame_lengths [B])``, with ``frames = 1 + samples //
hop_length`` (for even ``n_fft``). All share one framing, that of
``librosa.stft(center=True, pad_mode="constant", window="hann")``, and one padding rule:
samples beyond ``lengths`` are zeroed before the STFT, so an utterance gives the same valid
frames alone or in any batch, and frames beyond ``frame_lengths`` are exactly 0.

- :class:`Spectrogram`: ``|STFT| ** power`` (power 2: power spectrum; 1: magnitude).
- :class:`LogMel`: ``log(mel + 1e-6)`` over a Slaney mel filterbank of the power spectrum.
- :class:`MFCC`: orthonormal DCT-II over ``10 * log10(max(mel, 1e-10))``, i.e.
  ``librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), dct_type=2, norm="ortho")``.

Tests check all three against librosa on real recordings.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cadence.bounds import NonNegativeFloat, PositiveFloat, PositiveInt
from cadence.data.filterbanks import dct_matrix, hz_to_mel, mel_filterbank, mel_to_hz
from cadence.data.padding import zero_padding
from cadence.errors import ConfigError
from cadence.registry import FEATURES

__all__ = ["LogMel", "MFCC", "Spectrogram", "dct_matrix", "hz_to_mel", "mel_filterbank", "mel_to_hz", "require_waveforms"]

# librosa.power_to_db's default ``amin``: the power floor before taking decibels, so silence
# (exact zeros, e.g. digital silence) gives -100 dB instead of -inf.
_DECIBEL_POWER_FLOOR = 1e-10


def in_float32(forward: Callable) -> Callable:
    """Run a feature's ``forward`` in float32 under mixed precision (autocast off): spectra and
    their logarithms span more range than bf16 or fp16 keep."""

    @functools.wraps(forward)
    def wrapped(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None):
        with torch.autocast(waveforms.device.type, enabled=False):
            precise = waveforms.dtype in (torch.float32, torch.float64)  # float64 stays (reference runs)
            return forward(self, waveforms if precise else waveforms.float(), lengths)

    return wrapped


def require_waveforms(waveforms: torch.Tensor, stage: str) -> None:
    """A ConfigError unless ``waveforms`` is ``[batch, samples]``: a waveform stage (a distortion,
    speed perturbation) listed after the waveform transform gets features instead."""
    if waveforms.dim() != 2:
        raise ConfigError(
            f"features: {stage} takes waveforms [batch, samples], got shape {tuple(waveforms.shape)}; "
            "list it before the waveform transform (log_mel, mfcc)"
        )


class _ShortTimeSpectrum(nn.Module):
    """The framing every feature shares: validation, the window, frame counts, ``|STFT| ** power``.

    The window is a non-persistent buffer: it follows ``.to(device)`` but is not saved in
    checkpoints, since it is derived from the constructor arguments.
    """

    def __init__(self, sample_rate: int, n_fft: int, win_length: int, hop_length: int) -> None:
        super().__init__()
        if sample_rate <= 0 or n_fft <= 0:
            raise ValueError(f"sample_rate and n_fft must be positive, got {sample_rate} and {n_fft}")
        if not 0 < win_length <= n_fft:
            raise ValueError(f"win_length must be in 1..n_fft={n_fft}, got {win_length}")
        if hop_length <= 0:
            raise ValueError(f"hop_length must be positive, got {hop_length}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length

        # The Hann window is centred in an n_fft frame, zeros either side (as librosa and torch do).
        window = torch.zeros(n_fft, dtype=torch.float64)
        left = (n_fft - win_length) // 2
        window[left : left + win_length] = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window.float(), persistent=False)  # [n_fft]

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of frames for waveforms of ``lengths`` samples."""
        padding = self.n_fft // 2
        return 1 + torch.div(lengths + 2 * padding - self.n_fft, self.hop_length, rounding_mode="floor")

    def _spectrum(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None, power: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``|STFT| ** power [B, n_fft // 2 + 1, frames]`` (padding frames not yet zeroed), frame_lengths."""
        if waveforms.dim() != 2:
            raise ConfigError(
                f"features: {type(self).__name__} takes waveforms [batch, samples], got shape {tuple(waveforms.shape)}; "
                "list the features in order: a waveform transform (log_mel, mfcc) first, then normalize and spec_augment"
            )
        batch, samples = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.int64, device=waveforms.device)
        lengths = lengths.to(device=waveforms.device, dtype=torch.int64)

        # Zero what lies beyond each length, so no padding value reaches a valid frame.
        waveforms = zero_padding(waveforms, lengths)  # [B, samples]
        padding = self.n_fft // 2
        padded = F.pad(waveforms, (padding, padding), mode="constant", value=0.0)
        spectrum = torch.stft(
            padded,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window.to(waveforms.dtype),
            center=False,
            return_complex=True,
        )  # [B, n_fft // 2 + 1, frames]
        if power == 2.0:
            # Skips the square root inside abs(): cheaper, and exact for the common case.
            magnitude_power = spectrum.real.square() + spectrum.imag.square()
        elif power == 1.0:
            magnitude_power = spectrum.abs()
        else:
            magnitude_power = spectrum.abs().pow(power)
        return magnitude_power, self.frame_lengths(lengths)

    def _framing_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}"
        )


@FEATURES.register("spectrogram")
class Spectrogram(_ShortTimeSpectrum):
    """``|STFT| ** power`` of padded waveforms: ``[B, n_fft // 2 + 1, frames]``.

    Each waveform is padded with ``n_fft // 2`` zeros on each side (center=True, constant
    padding); frames every ``hop_length`` samples are windowed with a periodic Hann window of
    ``win_length`` samples centred in ``n_fft``. ``power=2`` gives the power spectrum
    (``librosa.stft`` magnitude squared), ``power=1`` the magnitude.

    Example:

        >>> spectrogram = Spectrogram(power=1.0)
        >>> features, frame_lengths = spectrogram(torch.ones(2, 800), torch.tensor([800, 400]))
        >>> features.shape, frame_lengths.tolist()
        (torch.Size([2, 129, 11]), [11, 6])
        >>> bool(features[1, :, 6:].eq(0).all())  # frames beyond frame_lengths are exactly 0
        True
    """

    def __init__(
        self,
        *,
        sample_rate: PositiveInt = 8000,
        n_fft: PositiveInt = 256,
        win_length: PositiveInt = 200,
        hop_length: PositiveInt = 80,
        power: PositiveFloat = 2.0,
    ) -> None:
        super().__init__(sample_rate, n_fft, win_length, hop_length)
        if power <= 0:
            raise ValueError(f"power must be positive (1: magnitude, 2: power), got {power}")
        self.power = power

    @in_float32
    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        spectrum, frame_lengths = self._spectrum(waveforms, lengths, self.power)
        return zero_padding(spectrum, frame_lengths), frame_lengths

    def extra_repr(self) -> str:
        return f"{self._framing_repr()}, power={self.power}"


class _MelSpectrum(_ShortTimeSpectrum):
    """The framing plus a Slaney mel filterbank (a non-persistent buffer) over the power spectrum."""

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        win_length: int,
        hop_length: int,
        n_mels: int,
        f_min: float,
        f_max: float | None,
    ) -> None:
        super().__init__(sample_rate, n_fft, win_length, hop_length)
        f_max = sample_rate / 2.0 if f_max is None else f_max
        if n_mels <= 0:
            raise ValueError(f"n_mels must be positive, got {n_mels}")
        if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min} f_max={f_max}")
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max
        filterbank = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max))
        self.register_buffer("filterbank", filterbank.float(), persistent=False)  # [n_mels, n_fft // 2 + 1]

    def _mel_power(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mel band power ``[B, n_mels, frames]`` (padding frames not yet zeroed), frame_lengths."""
        power, frame_lengths = self._spectrum(waveforms, lengths, power=2.0)
        return torch.matmul(self.filterbank.to(power.dtype), power), frame_lengths

    def _mel_repr(self) -> str:
        return f"{self._framing_repr()}, n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}"


@FEATURES.register("log_mel")
class LogMel(_MelSpectrum):
    """Log mel spectrogram of padded waveforms.

    Shapes: ``waveforms [B, samples]`` float, ``lengths [B]`` samples (int) ->
    ``features [B, n_mels, frames]``, ``frame_lengths [B]`` int64 with
    ``frames = 1 + samples // hop_length`` (for even ``n_fft``).

    Definition: the power spectrum of :class:`Spectrogram` goes through
    :func:`mel_filterbank`; the result is ``log(mel + log_offset)``. This matches
    ``librosa.feature.melspectrogram(center=True, pad_mode="constant", power=2.0,
    window="hann")`` with a Slaney mel filterbank, followed by ``log(mel + 1e-6)``.

    Frames beyond ``frame_lengths`` are set to 0, so statistics pooled over padded frames
    (e.g. a masked mean) see no padding values.

    Example:

        >>> features, frame_lengths = LogMel()(torch.zeros(2, 8000), torch.tensor([8000, 4000]))
        >>> features.shape, frame_lengths.tolist()
        (torch.Size([2, 40, 101]), [101, 51])
    """

    def __init__(
        self,
        *,
        sample_rate: PositiveInt = 8000,
        n_fft: PositiveInt = 256,
        win_length: PositiveInt = 200,
        hop_length: PositiveInt = 80,
        n_mels: PositiveInt = 40,
        f_min: NonNegativeFloat = 0.0,
        f_max: PositiveFloat | None = None,
        log_offset: PositiveFloat = 1e-6,
    ) -> None:
        super().__init__(sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max)
        if log_offset <= 0:
            raise ValueError(f"log_offset must be positive, got {log_offset}")
        self.log_offset = log_offset

    @in_float32
    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mel, frame_lengths = self._mel_power(waveforms, lengths)  # [B, n_mels, frames]
        return zero_padding(torch.log(mel + self.log_offset), frame_lengths), frame_lengths

    def extra_repr(self) -> str:
        return self._mel_repr()


@FEATURES.register("mfcc")
class MFCC(_MelSpectrum):
    """Mel-frequency cepstral coefficients of padded waveforms: ``[B, n_mfcc, frames]``.

    Definition: the mel band power of :class:`LogMel` (before its log) in decibels,
    ``10 * log10(max(mel, 1e-10))``, then the orthonormal DCT-II over the mel bands, keeping
    the first ``n_mfcc`` coefficients. This matches ``librosa.feature.mfcc(
    S=librosa.power_to_db(mel, top_db=None), n_mfcc=n_mfcc, dct_type=2, norm="ortho")`` for
    the same mel spectrogram. No ``top_db`` clipping: it would depend on each utterance's
    loudest frame, a whole-utterance statistic a streaming or chunked front end cannot know.

    The DCT basis is a non-persistent buffer, like the window and the filterbank.

    Example:

        >>> mfcc = MFCC(n_mfcc=13)
        >>> features, frame_lengths = mfcc(torch.randn(2, 8000), torch.tensor([8000, 4000]))
        >>> features.shape, frame_lengths.tolist()
        (torch.Size([2, 13, 101]), [101, 51])
    """

    def __init__(
        self,
        *,
        sample_rate: PositiveInt = 8000,
        n_fft: PositiveInt = 256,
        win_length: PositiveInt = 200,
        hop_length: PositiveInt = 80,
        n_mels: PositiveInt = 40,
        n_mfcc: PositiveInt = 13,
        f_min: NonNegativeFloat = 0.0,
        f_max: PositiveFloat | None = None,
    ) -> None:
        super().__init__(sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max)
        if not 0 < n_mfcc <= n_mels:
            raise ValueError(f"n_mfcc must be in 1..n_mels={n_mels}, got {n_mfcc}")
        self.n_mfcc = n_mfcc
        basis = torch.from_numpy(dct_matrix(n_mfcc, n_mels))
        self.register_buffer("dct_basis", basis.float(), persistent=False)  # [n_mfcc, n_mels]

    @in_float32
    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mel, frame_lengths = self._mel_power(waveforms, lengths)  # [B, n_mels, frames]
        decibels = 10.0 * torch.log10(mel.clamp_min(_DECIBEL_POWER_FLOOR))
        coefficients = torch.matmul(self.dct_basis.to(decibels.dtype), decibels)  # [B, n_mfcc, frames]
        return zero_padding(coefficients, frame_lengths), frame_lengths

    def extra_repr(self) -> str:
        return f"{self._mel_repr()}, n_mfcc={self.n_mfcc}"
