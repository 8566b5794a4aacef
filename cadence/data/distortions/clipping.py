"""Clipping: each chosen utterance clipped at a random fraction of its own peak, as an
overdriven amplifier or a recording level set too high would.

The threshold is ``fraction * max |x|`` over the utterance's valid samples, ``fraction``
drawn uniformly from ``fraction`` (a ``[low, high]`` range in (0, 1]; 1 leaves the utterance
as it is); samples beyond it in either direction are set to it. One draw per utterance.

Example:

    >>> clip = Clipping(fraction=(0.5, 0.5), p=1.0)
    >>> clipped, lengths = clip(torch.tensor([[0.25, -0.75, 0.625, 1.0]]), torch.tensor([4]))
    >>> clipped.tolist()
    [[0.25, -0.5, 0.5, 0.5]]
"""

from __future__ import annotations

import torch

from cadence.bounds import PositiveFloat, Probability
from cadence.data.distortions.common import Distortion, checked_range, uniform_between
from cadence.registry import FEATURES

__all__ = ["Clipping"]


@FEATURES.register("clipping")
class Clipping(Distortion):
    """Clip each chosen utterance (probability ``p``) at ``fraction`` of its peak, ``fraction``
    drawn from the range ``fraction``."""

    registered_as = "clipping"

    def __init__(self, p: Probability = 0.5, fraction: tuple[PositiveFloat, PositiveFloat] = (0.1, 0.5)) -> None:
        super().__init__(p, draws_per_utterance=1)
        self.fraction = checked_range(self.registered_as, "fraction", fraction, above=0, at_most=1)

    def distort(self, waveforms: torch.Tensor, lengths: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        peak = waveforms.abs().amax(dim=-1)  # [B]: the padding is 0, so the valid samples' peak
        threshold = (uniform_between(draws[:, 0], self.fraction).to(waveforms.dtype) * peak)[:, None]  # [B, 1]
        return torch.clamp(waveforms, -threshold, threshold)

    def extra_repr(self) -> str:
        return f"p={self.p}, fraction={list(self.fraction)}"
