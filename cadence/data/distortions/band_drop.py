"""Band drop: a random frequency band of each chosen utterance removed (band-stop filtering).

PASE+ drops a band so that the encoder cannot rely on any one part of the spectrum. Each
chosen utterance loses the frequencies within ``width_hz / 2`` of a centre, the centre drawn
uniformly from ``center_hz`` and the width from ``width_hz`` (both in Hz, ranges
``[low, high]``; the band is clipped to ``[0, sample_rate / 2]``). The filter is a brick wall
in the FFT domain (:func:`cadence.data.distortions.common.remove_band`), the whole batch at
once; two draws per utterance.

Example:

    >>> drop = BandDrop(center_hz=(1000.0, 1000.0), width_hz=(400.0, 400.0), p=1.0)
    >>> tones = torch.sin(2 * math.pi * torch.tensor([[1000.0], [3000.0]]) * torch.arange(8000) / 8000)
    >>> dropped, lengths = drop(tones, torch.tensor([8000, 8000]))
    >>> [round(float(row[2000:6000].abs().max()), 2) for row in dropped]  # 1 kHz is inside the band, 3 kHz outside
    [0.0, 1.0]
"""

from __future__ import annotations

import math

import torch

from cadence.bounds import NonNegativeFloat, PositiveFloat, PositiveInt, Probability
from cadence.data.distortions.common import Distortion, checked_range, checked_value, remove_band, uniform_between
from cadence.registry import FEATURES

__all__ = ["BandDrop"]


@FEATURES.register("band_drop")
class BandDrop(Distortion):
    """Remove the band ``centre +- width / 2`` from each chosen utterance (probability ``p``),
    ``centre`` drawn from ``center_hz`` (default: the whole band, up to ``sample_rate / 2``),
    ``width`` from ``width_hz``. ``sample_rate``: the data's (filled in from the data when a
    recipe leaves it out)."""

    registered_as = "band_drop"

    def __init__(
        self,
        sample_rate: PositiveInt = 8000,
        p: Probability = 0.5,
        width_hz: tuple[PositiveFloat, PositiveFloat] = (100.0, 1000.0),
        center_hz: tuple[NonNegativeFloat, NonNegativeFloat] | None = None,
    ) -> None:
        super().__init__(p, draws_per_utterance=2)
        name = self.registered_as
        self.sample_rate = checked_value(name, "sample_rate", sample_rate, above=0, integer=True)
        nyquist = self.sample_rate / 2
        self.width_hz = checked_range(name, "width_hz", width_hz, above=0, at_most=nyquist)
        self.center_hz = checked_range(name, "center_hz", (0.0, nyquist) if center_hz is None else center_hz,
                                       at_least=0, at_most=nyquist)

    def distort(self, waveforms: torch.Tensor, lengths: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        centre = uniform_between(draws[:, 0], self.center_hz)  # [B], Hz
        half_width = uniform_between(draws[:, 1], self.width_hz) / 2  # [B], Hz
        return remove_band(waveforms, centre - half_width, centre + half_width, self.sample_rate)

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, p={self.p}, width_hz={list(self.width_hz)}, center_hz={list(self.center_hz)}"
