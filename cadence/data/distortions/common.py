"""What every distortion shares: one draw per utterance for ``p``, float32, the padding rule,
range settings, FFT-domain band removal and folders of audio files.

A distortion is a :class:`Distortion`: a feature stage ``(waveforms [B, S], lengths [B]) ->
(waveforms [B, S], lengths)`` that, in training mode, distorts each utterance with its own
probability ``p`` and leaves the others exactly as they came. The subclass says how many
uniform draws one utterance needs (``draws_per_utterance``, fixed by its settings) and how to
distort a whole batch from them (``distort``); this base class does the rest, the same way for
every family:

- the draws, ``[B, 1 + draws_per_utterance]`` uniform float64 from torch's global CPU
  generator or an explicit ``generator`` (:func:`cadence.runtime.draws.uniform_draws`): the
  count depends on the batch size and the settings only, never on the data or the lengths,
  so a seed reproduces the distortion and a resumed run (which restores the RNG) draws the same;
- column 0 decides which utterances are distorted (``draw < p``: ``p=0`` never, ``p=1`` always);
- autocast off, float32 (float64 stays, for reference runs): filters and powers in bf16 or fp16
  would lose the quiet parts of the signal;
- samples beyond each length are zeroed before the distortion sees them and after it, so no
  padding value reaches a valid sample and a distorted utterance's padding is 0;
- in evaluation mode, the identity (the same tensor object).

>>> class Silence(Distortion):  # a distortion that silences the utterance
...     registered_as = "silence"
...     def distort(self, waveforms, lengths, draws):
...         return torch.zeros_like(waveforms)
>>> silenced, lengths = Silence(p=1.0, draws_per_utterance=0)(torch.ones(2, 4), torch.tensor([4, 2]))
>>> silenced.tolist(), lengths.tolist()
([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], [4, 2])
>>> Silence(p=0.0, draws_per_utterance=0)(torch.ones(1, 3), torch.tensor([3]))[0].tolist()  # p=0: untouched
[[1.0, 1.0, 1.0]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from cadence.data.audio import load_audio
from cadence.data.features import require_waveforms
from cadence.data.padding import zero_padding
from cadence.errors import ConfigError, DataError
from cadence.runtime.draws import uniform_draws

__all__ = [
    "AUDIO_SUFFIXES", "Distortion", "checked_probability", "checked_range", "checked_value", "fast_fft_size", "load_audio_folder",
    "remove_band", "uniform_between",
]

# The formats cadence reads (libsndfile's; cadence.data.audio).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class Distortion(nn.Module):
    """Base class of the distortions: ``p``, the draws, float32 and the padding (see the module docstring).

    Subclasses set ``registered_as`` (their name in ``FEATURES``, for messages) and implement
    :meth:`distort`.
    """

    registered_as = "distortion"

    def __init__(self, p: float, draws_per_utterance: int) -> None:
        super().__init__()
        self.p = checked_probability(self.registered_as, p)
        self.draws_per_utterance = draws_per_utterance

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return waveforms, lengths
        require_waveforms(waveforms, self.registered_as)
        # One row of draws per utterance, whatever is in the batch (see the module docstring).
        draws = uniform_draws((waveforms.shape[0], 1 + self.draws_per_utterance), generator)  # [B, 1 + k]
        chosen = draws[:, 0] < self.p  # [B]
        with torch.autocast(waveforms.device.type, enabled=False):
            precise = waveforms if waveforms.dtype in (torch.float32, torch.float64) else waveforms.float()
            if not bool(chosen.any()) or waveforms.shape[-1] == 0:  # a host sync where the generator is on an accelerator
                return precise, lengths
            device_lengths = lengths.to(device=waveforms.device, dtype=torch.int64)
            clean = zero_padding(precise, device_lengths)  # [B, S]
            distorted = self.distort(clean, device_lengths, draws[:, 1:].to(waveforms.device))  # [B, S]
            distorted = zero_padding(distorted.to(precise.dtype), device_lengths)
            return torch.where(chosen.to(waveforms.device)[:, None], distorted, precise), lengths

    def distort(self, waveforms: torch.Tensor, lengths: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Every utterance of ``waveforms [B, S]`` (zero padded) distorted, ``[B, S]``, from its
        ``draws [B, draws_per_utterance]`` (uniform in [0, 1), float64); the rows not chosen are
        discarded afterwards, and the padding zeroed."""
        raise NotImplementedError


def checked_probability(owner: str, p: float) -> float:
    """``p`` as a float in [0, 1], or a ConfigError naming ``owner.p``."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"{owner}: p must be a probability in [0, 1] (the share of utterances distorted), got {p!r}")
    return float(p)


def checked_value(
    owner: str,
    setting: str,
    value: float,
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
    integer: bool = False,
) -> float:
    """``value``, a finite number (an integer with ``integer=True``) within the bounds given, or a
    ConfigError naming ``owner.setting`` and what it takes.

    >>> checked_value("chop", "sample_rate", 0, above=0, integer=True)
    Traceback (most recent call last):
    ...
    cadence.errors.ConfigError: chop: sample_rate must be an integer > 0, got 0
    """
    wanted = ("an integer" if integer else "a number") + _describe_bounds(above, at_least, at_most, below)
    if not _within(value, above, at_least, at_most, below, integer):
        raise ConfigError(f"{owner}: {setting} must be {wanted}, got {value!r}")
    return int(value) if integer else float(value)


def checked_range(
    owner: str,
    setting: str,
    values: Sequence[float],
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
    integer: bool = False,
) -> tuple[float, float]:
    """``values`` as ``(low, high)``, two finite numbers with ``low <= high`` within the bounds given,
    or a ConfigError naming ``owner.setting`` and what it takes.

    >>> checked_range("clipping", "fraction", [0.2, 0.5], above=0.0, at_most=1.0)
    (0.2, 0.5)
    >>> checked_range("clipping", "fraction", [0.5, 0.2], above=0.0, at_most=1.0)
    Traceback (most recent call last):
    ...
    cadence.errors.ConfigError: clipping: fraction must be [low, high], two numbers with low <= high, each > 0 and <= 1, got [0.5, 0.2]
    """
    bounds = _describe_bounds(above, at_least, at_most, below)
    wanted = f"[low, high], two {'integers' if integer else 'numbers'} with low <= high" + (f", each{bounds}" if bounds else "")
    problem = ConfigError(f"{owner}: {setting} must be {wanted}, got {values!r}")
    if isinstance(values, (str, bytes)):
        raise problem
    try:
        low, high = values
    except (TypeError, ValueError):
        raise problem from None
    if not all(_within(value, above, at_least, at_most, below, integer) for value in (low, high)) or low > high:
        raise problem
    return (int(low), int(high)) if integer else (float(low), float(high))


def _describe_bounds(above: float | None, at_least: float | None, at_most: float | None, below: float | None) -> str:
    """`` > 0 and <= 1``: the bounds given, for messages."""
    bounds = [
        f"{word} {bound:g}" for word, bound in ((">", above), (">=", at_least), ("<=", at_most), ("<", below))
        if bound is not None
    ]
    return f" {' and '.join(bounds)}" if bounds else ""


def _within(
    value: object, above: float | None, at_least: float | None, at_most: float | None, below: float | None, integer: bool
) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if integer and value != int(value):
        return False
    return not (
        (above is not None and value <= above) or (at_least is not None and value < at_least)
        or (at_most is not None and value > at_most) or (below is not None and value >= below)
    )


def uniform_between(draws: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """``draws`` (uniform in [0, 1)) mapped onto ``[low, high)`` (``low`` when both are equal)."""
    low, high = bounds
    return low + draws * (high - low)


def fast_fft_size(size: int) -> int:
    """The smallest ``2^a 3^b 5^c >= size``: FFT libraries are fastest on such sizes.

    >>> fast_fft_size(16001), fast_fft_size(1)
    (16200, 1)
    """
    best = 1 << max(0, size - 1).bit_length()  # the next power of two, an upper bound
    power_of_five = 1
    while power_of_five < best:
        odd_part = power_of_five
        while odd_part < best:
            candidate = odd_part
            while candidate < size:
                candidate *= 2
            best = min(best, candidate)
            odd_part *= 3
        power_of_five *= 5
    return best


def remove_band(
    waveforms: torch.Tensor, low_hz: torch.Tensor, high_hz: torch.Tensor, sample_rate: int
) -> torch.Tensor:
    """``waveforms [B, S]`` without the frequencies in ``[low_hz[b], high_hz[b]]``: FFT-domain
    brick-wall band-stop filtering, one band per utterance, for the whole batch at once.

    The FFT is taken over at least twice the samples: the zeros after the signal keep the
    filter's ringing off the end of an utterance from wrapping round onto its start.

    >>> tones = torch.sin(2 * math.pi * torch.tensor([[500.0], [1500.0]]) * torch.arange(800) / 8000)  # [2, 800]
    >>> filtered = remove_band(tones, torch.tensor([1000.0, 1000.0]), torch.tensor([2000.0, 2000.0]), 8000)
    >>> [round(float(row[200:600].abs().max()), 2) for row in filtered]  # 500 Hz passes, 1500 Hz is removed
    [1.0, 0.0]
    """
    samples = waveforms.shape[-1]
    size = fast_fft_size(2 * samples)
    spectrum = torch.fft.rfft(waveforms, n=size)  # [B, size // 2 + 1]
    frequencies = torch.fft.rfftfreq(size, d=1.0 / sample_rate, device=waveforms.device)  # [size // 2 + 1]
    stopped = (frequencies[None, :] >= low_hz[:, None]) & (frequencies[None, :] <= high_hz[:, None])
    return torch.fft.irfft(spectrum.masked_fill(stopped, 0.0), n=size)[..., :samples]


def load_audio_folder(folder: str | Path, sample_rate: int, owner: str, setting: str) -> list[torch.Tensor]:
    """Every audio file under ``folder`` (sorted by path, subfolders included) as a mono float32
    waveform ``[samples]`` at ``sample_rate`` (resampled with soxr, :func:`cadence.data.audio.load_audio`).

    A missing or empty folder is a DataError naming ``owner.setting``; a bad file, a
    :class:`cadence.data.audio.BadAudio` naming the file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{owner}: {setting} {str(folder)!r} is not a folder; give a folder of audio files "
                        f"({', '.join(AUDIO_SUFFIXES)}), relative to the current directory or absolute")
    files = sorted(path for path in root.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file())
    if not files:
        raise DataError(f"{owner}: {setting} {str(folder)!r} holds no audio files ({', '.join(AUDIO_SUFFIXES)}); "
                        "put some there or point to another folder")
    return [load_audio(path, sample_rate) for path in files]
