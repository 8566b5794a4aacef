"""The waveform labeller: the clean signal itself, for PASE+'s waveform-reconstruction worker.

``waveform`` gives ``[B, 1, (S // stride) * stride]`` samples (``rate = "samples"``): the
clean batch cut to whole encoder frames, which is what a decoder that upsamples each of the
``S // stride`` frames by ``stride`` (``waveform_decoder``) can produce. Samples beyond each
utterance's ``(length // stride) * stride`` are 0.

``normalize="utterance"`` (the default, as for the other regressors) brings each utterance's
valid samples to zero mean and unit variance. Recorded speech sits far below full scale (FSDD's
mean absolute sample is about 0.02), so on the raw signal the reconstruction loss and its
gradient into the shared encoder are some 25 times smaller than the other workers' on their
standardized targets: in a 9-epoch FSDD pretraining beside them the worker learnt nothing (its
L1 stayed at what predicting silence gives), while standardized it does. ``"none"`` keeps the
signal as it is.

>>> labeller = CleanWaveform(sample_rate=8000, stride=160, normalize="none")
>>> targets, target_lengths = labeller(torch.ones(2, 500), torch.tensor([500, 330]))
>>> targets.shape, target_lengths.tolist(), targets[1, 0, 319:321].tolist()
(torch.Size([2, 1, 480]), [480, 320], [1.0, 0.0])
>>> standardized, _ = CleanWaveform(sample_rate=8000, stride=160)(0.01 * torch.tensor([[1.0, -1.0] * 250]))
>>> [round(value, 4) for value in standardized[0, 0, :4].tolist()]
[1.0, -1.0, 1.0, -1.0]
"""

from __future__ import annotations

from typing import Literal

import torch

from cadence.data.features import in_float32
from cadence.data.labellers.framing import Labeller, Normalization
from cadence.registry import LABELLERS

__all__ = ["CleanWaveform"]


@LABELLERS.register("waveform")
class CleanWaveform(Labeller):
    """The clean waveform on whole encoder frames, standardized per utterance unless ``normalize="none"``:
    ``[B, 1, (S // stride) * stride]``."""

    registered = "waveform"
    rate: Literal["frames", "samples"] = "samples"
    size = 1

    def __init__(self, sample_rate: int, stride: int, normalize: Normalization = "utterance") -> None:
        super().__init__(sample_rate, stride, normalize)

    def target_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid target samples: whole encoder frames."""
        return torch.div(lengths, self.stride, rounding_mode="floor") * self.stride

    @in_float32
    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        waveforms, lengths = self.prepared(waveforms, lengths)  # [B, S], [B]
        usable = (waveforms.shape[-1] // self.stride) * self.stride
        return self.finished(waveforms[:, None, :usable], lengths)  # [B, 1, usable]
