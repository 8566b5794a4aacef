"""PASE+'s local and global info max (LIM, GIM): pairs of embeddings that a discriminator
learns to tell apart, same utterance (1) or another utterance (0).

Unlike the signal labellers (:mod:`cadence.data.labellers`), these read the encoder's own
output: for each utterance ``b`` of the batch with at least one frame,

- an anchor: the mean of ``window`` consecutive frames of ``b`` at a random start,
- a positive: the mean of another random window of ``b``,
- a negative: the mean of a random window of another utterance ``b'``, drawn among the
  batch's other utterances with frames (never ``b`` itself),

and the worker sees ``[anchor, positive]`` with target 1 and ``[anchor, negative]`` with target
0, stacked as ``inputs [2 N, 2 D, 1]`` and ``targets [2 N, 1, 1]``. LIM is one frame
(``window: 1``); GIM averages a long window (``window: 50``: 0.5 s at 100 frames a second), which
PASE+ takes from the utterance's other chunks. A window is cut to the utterance's length, so a
window as long as the chunk makes every positive pair two copies of one mean: keep it shorter.

The draws (4 per utterance of the batch) come from torch's global generator and their number
depends only on the batch size, so a resumed run draws the same pairs. A batch needs two
utterances with frames; with fewer, there is no negative and the worker gets no pair (its loss
is 0 for that batch).

>>> pairs = InfoMaxPairs(sample_rate=8000, stride=160, window=2)
>>> inputs, targets = pairs(torch.randn(3, 4, 10), torch.tensor([10, 6, 0]))
>>> inputs.shape, targets.flatten().tolist()  # 2 utterances with frames: 2 positives, 2 negatives
(torch.Size([4, 8, 1]), [1.0, 1.0, 0.0, 0.0])
"""

from __future__ import annotations

import torch
from torch import nn

from cadence.bounds import PositiveInt
from cadence.registry import LABELLERS
from cadence.runtime.draws import uniform_draws

__all__ = ["InfoMaxPairs", "global_info_max", "local_info_max"]


class InfoMaxPairs(nn.Module):
    """Positive and negative pairs of window means of the encoder's frames (see the module docstring)."""

    reads = "embeddings"  # the PASE task hands it the encoder's output, not the clean waveform
    size = 1  # one logit: same utterance or not

    def __init__(self, sample_rate: int, stride: int, window: PositiveInt = 1):
        super().__init__()
        self.window = window

    def worker_input_size(self, embedding_size: int) -> int:
        return 2 * embedding_size  # anchor and candidate side by side

    def forward(
        self, embeddings: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, dimensions, frames = embeddings.shape  # [B, D, T]
        draws = uniform_draws((batch, 4), generator, embeddings.device)
        lengths = lengths.to(embeddings.device)
        present = torch.nonzero(lengths > 0).flatten()  # utterances with at least one frame
        count = len(present)
        if count < 2:
            empty = embeddings.new_zeros(0, 2 * dimensions, 1)
            return empty, embeddings.new_zeros(0, 1, 1)
        draws = draws[:count]
        # Negatives: another present utterance, `shift` places on in the list of them (1 .. count - 1).
        shift = 1 + (draws[:, 0] * (count - 1)).floor().long().clamp(max=count - 2)
        other = present[(torch.arange(count, device=embeddings.device) + shift) % count]
        anchor = self.window_means(embeddings, lengths, present, draws[:, 1])
        positive = self.window_means(embeddings, lengths, present, draws[:, 2])
        negative = self.window_means(embeddings, lengths, other, draws[:, 3])
        inputs = torch.cat([torch.cat([anchor, positive], 1), torch.cat([anchor, negative], 1)], 0)[..., None]  # [2N, 2D, 1]
        targets = torch.cat([embeddings.new_ones(count), embeddings.new_zeros(count)])[:, None, None]  # [2N, 1, 1]
        return inputs, targets

    def window_means(self, embeddings: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """``[N, D]``: the mean of a window of ``min(window, length)`` frames of each of ``rows``,
        starting at ``floor(draw * (length - width + 1))``."""
        lengths = lengths[rows]  # [N]
        width = lengths.clamp(max=self.window)  # [N]
        start = (draws * (lengths - width + 1)).floor().long()  # [N]
        positions = torch.arange(embeddings.shape[-1], device=embeddings.device)[None, :]  # [1, T]
        inside = ((positions >= start[:, None]) & (positions < (start + width)[:, None])).to(embeddings.dtype)  # [N, T]
        return (embeddings[rows] * inside[:, None, :]).sum(-1) / width[:, None].to(embeddings.dtype)

    def extra_repr(self) -> str:
        return f"window={self.window}"


@LABELLERS.register("lim")
def local_info_max(sample_rate: int, stride: int, window: PositiveInt = 1) -> InfoMaxPairs:
    """LIM: single frames (``window`` 1) of the same or another utterance."""
    return InfoMaxPairs(sample_rate, stride, window)


@LABELLERS.register("gim")
def global_info_max(sample_rate: int, stride: int, window: PositiveInt = 50) -> InfoMaxPairs:
    """GIM: means over long windows (50 frames: 0.5 s at 16 kHz, 1 s at 8 kHz)."""
    return InfoMaxPairs(sample_rate, stride, window)
