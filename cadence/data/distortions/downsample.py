"""Downsampling: keep only the band a lower sample rate can carry, as narrow-band audio would.

Each chosen utterance is low-passed at the Nyquist frequency ``rate / 2`` of a sample rate
drawn uniformly from ``rate_hz`` (a ``[low, high]`` range below the data's ``sample_rate``):
what resampling down to ``rate`` and back up would leave (telephone speech is 8 kHz audio in
16 kHz data). The filter is a brick wall in the FFT domain
(:func:`cadence.data.distortions.common.remove_band`), the whole batch at once, and the data
keeps its own sample rate and length; one draw per utterance.

Example:

    >>> narrow = Downsample(sample_rate=16000, rate_hz=(8000.0, 8000.0), p=1.0)
    >>> tones = torch.sin(2 * math.pi * torch.tensor([[3000.0], [5000.0]]) * torch.arange(16000) / 16000)
    >>> kept, lengths = narrow(tones, torch.tensor([16000, 16000]))
    >>> [round(float(row[4000:12000].abs().max()), 2) for row in kept]  # 3 kHz is below 4 kHz, 5 kHz above
    [1.0, 0.0]
"""

from __future__ import annotations

import math

import torch

from cadence.bounds import PositiveFloat, PositiveInt, Probability
from cadence.data.distortions.common import Distortion, checked_range, checked_value, remove_band, uniform_between
from cadence.registry import FEATURES

__all__ = ["Downsample"]


@FEATURES.register("downsample")
class Downsample(Distortion):
    """Low-pass each chosen utterance (probability ``p``) at half a rate drawn from ``rate_hz``
    (default: from a quarter of ``sample_rate`` to three quarters of it). ``sample_rate``: the
    data's (filled in from the data when a recipe leaves it out)."""

    registered_as = "downsample"

    def __init__(
        self,
        sample_rate: PositiveInt = 8000,
        p: Probability = 0.5,
        rate_hz: tuple[PositiveFloat, PositiveFloat] | None = None,
    ) -> None:
        super().__init__(p, draws_per_utterance=1)
        name = self.registered_as
        self.sample_rate = checked_value(name, "sample_rate", sample_rate, above=0, integer=True)
        rate_hz = (self.sample_rate / 4, 3 * self.sample_rate / 4) if rate_hz is None else rate_hz
        self.rate_hz = checked_range(name, "rate_hz", rate_hz, above=0, below=self.sample_rate)

    def distort(self, waveforms: torch.Tensor, lengths: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        cutoff = uniform_between(draws[:, 0], self.rate_hz) / 2  # [B], Hz: the lower rate's Nyquist frequency
        return remove_band(waveforms, cutoff, torch.full_like(cutoff, math.inf), self.sample_rate)

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, p={self.p}, rate_hz={list(self.rate_hz)}"
