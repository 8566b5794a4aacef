"""The waveform labeller: the clean signal itself, for PASE+'s waveform-reconstruction worker.

``waveform`` gives ``[B, 1, (S // stride) * stride]`` samples (``rate = "samples"``): the
clean batch cut to whole encoder frames, which is what a decoder that upsamples each of the
``S // stride`` frames by ``stride`` (``waveform_decoder``) can produce. Samples beyond each
utterance's ``(length // stride) * stride`` are 0.

>>> labeller = CleanWaveform(sample_rate=8000, stride=160)
>>> targets, target_lengths = labeller(torch.ones(2, 500), torch.tensor([500, 330]))
>>> targets.shape, target_lengths.tolist(), targets[1, 0, 319:321].tolist()
(torch.Size([2, 1, 480]), [480, 320], [1.0, 0.0])
"""

from __future__ import annotations

from typing import Literal

import torch

from cadence.data.features import in_float32
from cadence.data.labellers.framing import Labeller
from cadence.data.padding import zero_padding
from cadence.registry import LABELLERS

__all__ = ["CleanWaveform"]


@LABELLERS.register("waveform")
class CleanWaveform(Labeller):
    """The clean waveform on whole encoder frames: ``[B, 1, (S // stride) * stride]``."""

    registered = "waveform"
    rate: Literal["frames", "samples"] = "samples"
    size = 1

    def __init__(self, sample_rate: int, stride: int) -> None:
        super().__init__(sample_rate, stride, normalize="none")  # the signal as it is: an L1 target

    def target_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid target samples: whole encoder frames."""
        return torch.div(lengths, self.stride, rounding_mode="floor") * self.stride

    @in_float32
    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        waveforms, lengths = self.prepared(waveforms, lengths)  # [B, S], [B]
        usable = (waveforms.shape[-1] // self.stride) * self.stride
        target_lengths = self.target_lengths(lengths)
        return zero_padding(waveforms[:, None, :usable], target_lengths), target_lengths  # [B, 1, usable]

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, stride={self.stride}"
