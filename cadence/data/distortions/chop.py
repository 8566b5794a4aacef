"""Time chopping: a few short segments of each chosen utterance replaced by silence, as
dropped packets or a failing connection would do.

Each chosen utterance loses ``n`` segments, ``n`` drawn uniformly from the integers of
``count`` (a ``[low, high]`` range), each of a duration drawn uniformly from ``duration_s``
(seconds, a ``[low, high]`` range; at most the utterance's length) and placed uniformly
within the utterance's valid samples; segments may overlap. Draws per utterance: one for
``n`` and two (duration, start) for each of ``count``'s ``high`` segments, used or not, so
their number depends on the settings only.

Example:

    >>> chop = Chop(sample_rate=8000, count=(1, 1), duration_s=(0.001, 0.001), p=1.0)
    >>> chopped, lengths = chop(torch.ones(2, 100), torch.tensor([100, 50]))
    >>> chopped.eq(0).sum(dim=-1).tolist()  # 8 samples (1 ms) each; the second's padding was 0 already
    [8, 58]
"""

from __future__ import annotations

import torch

from cadence.bounds import NonNegativeInt, PositiveFloat, PositiveInt, Probability
from cadence.data.distortions.common import Distortion, checked_range, checked_value, uniform_between
from cadence.registry import FEATURES

__all__ = ["Chop", "chopped_samples"]


@FEATURES.register("chop")
class Chop(Distortion):
    """Zero ``count`` segments of ``duration_s`` each (both drawn from their ranges) in each
    chosen utterance (probability ``p``). ``sample_rate``: the data's (filled in from the data
    when a recipe leaves it out), to turn seconds into samples."""

    registered_as = "chop"

    def __init__(
        self,
        sample_rate: PositiveInt = 8000,
        p: Probability = 0.5,
        count: tuple[NonNegativeInt, NonNegativeInt] = (1, 4),
        duration_s: tuple[PositiveFloat, PositiveFloat] = (0.01, 0.05),
    ) -> None:
        name = self.registered_as
        count = checked_range(name, "count", count, at_least=0, integer=True)
        super().__init__(p, draws_per_utterance=1 + 2 * count[1])
        self.sample_rate = checked_value(name, "sample_rate", sample_rate, above=0, integer=True)
        self.count = count
        self.duration_s = checked_range(name, "duration_s", duration_s, above=0)

    def distort(self, waveforms: torch.Tensor, lengths: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        return waveforms.masked_fill(chopped_samples(draws, lengths, waveforms.shape[-1], self.count,
                                                     self.duration_s, self.sample_rate), 0.0)

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, p={self.p}, count={list(self.count)}, duration_s={list(self.duration_s)}"


def chopped_samples(
    draws: torch.Tensor, lengths: torch.Tensor, samples: int, count: tuple[int, int], duration_s: tuple[float, float],
    sample_rate: int,
) -> torch.Tensor:
    """``[B, samples]`` bool, True inside a segment: ``draws [B, 1 + 2 count[1]]`` give each
    utterance's number of segments, then each segment's duration and start.

    Each segment adds +1 at its start and -1 at its end in a running sum: a sample is chopped
    where the sum is positive. Memory ``B x samples``, whatever the number of segments.
    """
    low, high = count
    number = low + (draws[:, 0] * (high - low + 1)).to(torch.int64).clamp(max=high - low)  # [B]
    segment_draws = draws[:, 1:].reshape(draws.shape[0], high, 2)  # [B, high, (duration, start)]
    widths = torch.round(uniform_between(segment_draws[..., 0], duration_s) * sample_rate).to(torch.int64)
    widths = torch.minimum(widths, lengths[:, None])  # [B, high]
    starts = (segment_draws[..., 1] * (lengths[:, None] - widths + 1)).to(torch.int64)  # in [0, length - width]
    used = (torch.arange(high, device=draws.device)[None, :] < number[:, None]).to(torch.int64)  # [B, high]
    edges = torch.zeros(draws.shape[0], samples + 1, dtype=torch.int64, device=draws.device)
    edges.scatter_add_(1, starts, used).scatter_add_(1, starts + widths, -used)
    return edges.cumsum(dim=-1)[:, :samples] > 0
