"""What every signal labeller shares: the frame grid of the encoder, padding, normalization.

A labeller computes, on the device and from the clean padded batch, the target one PASE+
worker learns to predict (see :mod:`cadence.tasks.pase`). Its targets must sit on the
encoder's grid: the encoder turns ``S`` samples into ``T = S // stride`` frames, frame ``t``
describing samples ``[t * stride, (t + 1) * stride)``, so a labeller's frame ``t`` describes
the signal around that span's centre, sample ``t * stride + stride // 2``.

- :class:`Labeller`: the base class. It validates the encoder's ``sample_rate`` and
  ``stride`` (which the task injects), zeroes the samples beyond each length (silence, so an
  utterance gives the same targets alone or in any padded batch) and finishes the targets:
  per-utterance normalization, then exactly 0 beyond ``target_lengths``.
- :func:`centred_frames`: windows of the waveform centred on the encoder's frame centres.
- :func:`standardize`: zero mean and unit variance per channel over a mask of frames.

>>> frames = centred_frames(torch.arange(1.0, 9.0)[None, :], stride=4, window=4)  # [B, T, window]
>>> frames.tolist()  # centres at samples 2 and 6 (values 3 and 7): 2 samples either side
[[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]]
"""

from __future__ import annotations

import math
from typing import Literal, NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from cadence.data.padding import padding_mask, zero_padding
from cadence.errors import ConfigError, DataError

__all__ = ["Labeller", "Normalization", "centred_frames", "default_window_seconds", "standardize"]

# "utterance": each channel to zero mean and unit variance over the utterance's valid frames,
# so the workers' MSE losses weigh channels (and labellers) alike; "none": the raw values.
Normalization = Literal["utterance", "none"]

# Channels flatter than this (a standard deviation of 1e-3: a constant channel's rounding
# noise, silence at the log floor) are centred but not scaled up: scaling them to unit
# variance would turn float32 rounding into a target.
_VARIANCE_FLOOR = 1e-6


def default_window_seconds(sample_rate: int) -> float:
    """The short analysis window: 25 ms from 16 kHz up (PASE+'s), 20 ms below (at 8 kHz the
    encoder's frame is 20 ms, and one frame's window keeps ``n_fft`` at 256)."""
    return 0.025 if sample_rate >= 16000 else 0.020


def smallest_power_of_two(at_least: int) -> int:
    """The smallest power of two ``>= at_least``: the default FFT size for a window."""
    return 1 << max(0, math.ceil(math.log2(at_least)))


def centred_frames(waveforms: torch.Tensor, stride: int, window: int) -> torch.Tensor:
    """``[B, S] -> [B, S // stride, window]``: frame ``t`` holds the ``window`` samples from
    ``t * stride + stride // 2 - window // 2`` on (centred on the encoder's frame ``t``), with
    zeros where that reaches outside the signal. A view where it can be (``unfold``)."""
    count = waveforms.shape[-1] // stride
    padded = F.pad(waveforms, (window, window))  # enough silence either side for any frame
    first = window + stride // 2 - window // 2  # where frame 0 starts in the padded signal
    return padded[:, first:].unfold(-1, window, stride)[:, :count]  # [B, T, window]


def standardize(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values [B, C, T]`` with each channel of each utterance brought to zero mean and unit
    (population) variance over the frames where ``mask [B, C or 1, T]`` is True; 0 elsewhere.

    >>> values = torch.tensor([[[1.0, 3.0, 100.0]]])
    >>> standardize(values, torch.tensor([[[True, True, False]]])).tolist()
    [[[-1.0, 1.0, 0.0]]]
    """
    weights = mask.to(values.dtype)
    count = weights.sum(-1, keepdim=True).clamp_min(1.0)  # [B, C, 1]
    mean = (values * weights).sum(-1, keepdim=True) / count
    centred = (values - mean) * weights
    variance = centred.square().sum(-1, keepdim=True) / count
    return centred / variance.clamp_min(_VARIANCE_FLOOR).sqrt()


class Labeller(nn.Module):
    """Base of the signal labellers: ``forward(waveforms [B, S], lengths [B]) -> (targets
    [B, size, T], target_lengths [B])`` on the encoder's frame grid (``rate = "frames"``).

    Subclasses set ``registered`` (their name in :data:`cadence.registry.LABELLERS`, for
    messages) and ``size``, and call :meth:`prepared` first and :meth:`finished` last.
    """

    registered = "labeller"
    rate: Literal["frames", "samples"] = "frames"
    size: int

    def __init__(self, sample_rate: int, stride: int, normalize: Normalization = "none") -> None:
        super().__init__()
        for setting, value in (("sample_rate", sample_rate), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(
                    f"labeller {self.registered}: {setting} must be a positive number of samples, got {value!r}; "
                    "the pase task passes the encoder's own (a model with sample_rate and stride attributes)"
                )
        if normalize not in ("utterance", "none"):
            self.invalid("normalize", normalize, "is not a normalization", "give 'utterance' or 'none'")
        self.sample_rate = sample_rate
        self.stride = stride
        self.normalize = normalize

    def invalid(self, setting: str, value: object, problem: str, fix: str) -> NoReturn:
        """Raise the ConfigError for a bad ``setting``: what is wrong and how to fix it."""
        raise ConfigError(f"labeller {self.registered}: {setting}={value!r} {problem}; {fix}")

    def window_samples(self, setting: str, seconds: float) -> int:
        """``seconds`` as a whole number of samples (at least 2, a window must have a shape)."""
        samples = round(seconds * self.sample_rate)
        if samples < 2:
            self.invalid(setting, seconds, f"is {samples} sample(s) at {self.sample_rate} Hz",
                         f"give at least {2 / self.sample_rate:g} seconds")
        return samples

    def target_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid target frames of utterances of ``lengths`` samples: whole encoder frames."""
        return torch.div(lengths, self.stride, rounding_mode="floor")

    def prepared(self, waveforms: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``waveforms [B, S]`` with every sample beyond ``lengths`` zeroed, and the lengths as int64."""
        if waveforms.dim() != 2:
            raise DataError(
                f"labeller {self.registered} takes waveforms [batch, samples], got shape {tuple(waveforms.shape)}; "
                "give the clean mono batch (batch.inputs) with its lengths in samples"
            )
        if lengths is None:
            lengths = torch.full((waveforms.shape[0],), waveforms.shape[-1], dtype=torch.int64)
        lengths = lengths.to(device=waveforms.device, dtype=torch.int64)
        if lengths.shape != waveforms.shape[:1]:
            raise DataError(f"labeller {self.registered}: lengths must be [batch] = [{waveforms.shape[0]}], "
                            f"got shape {tuple(lengths.shape)}")
        return zero_padding(waveforms, lengths), lengths

    def nothing_to_analyse(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The (empty) targets of a batch without a whole frame or without an utterance, else None:
        FFT backends refuse empty inputs, so such a batch never reaches the analysis."""
        batch, samples = waveforms.shape
        if batch and samples >= self.stride:
            return None
        return waveforms.new_zeros(batch, self.size, samples // self.stride), self.target_lengths(lengths)

    def finished(self, targets: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``targets [B, size, T]`` normalized per ``self.normalize`` and 0 beyond the target
        lengths, and the target lengths."""
        target_lengths = self.target_lengths(lengths)
        if self.normalize == "utterance":
            targets = self.standardized(targets, target_lengths)
        return zero_padding(targets, target_lengths), target_lengths

    def standardized(self, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        """``normalize="utterance"``: every channel over the utterance's valid frames (a labeller
        whose channels differ in kind, such as prosody, overrides this)."""
        valid = ~padding_mask(target_lengths, targets.shape[-1])[:, None, :]  # [B, 1, T]
        return standardize(targets, valid)

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, stride={self.stride}, normalize={self.normalize!r}"
