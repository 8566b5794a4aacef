"""A quasi-recurrent layer (Bradbury et al., 2017) on padded batches, in plain PyTorch.

All the heavy work is one convolution over time that gives, per frame, a candidate ``z``, a
forget gate ``f`` and an output gate ``o`` (fo-pooling). Only an element-wise recurrence is left:
``c_t = f_t * c_{t-1} + (1 - f_t) * z_t`` and ``h_t = o_t * c_t``, so a frame costs a few
element-wise operations instead of a matrix product as in an LSTM or a GRU.

``window`` frames of context feed the gates (1: the current frame only; 2: also the previous
one, as in the paper's language models). With ``bidirectional``, a second layer reads each
utterance backwards from its own last valid frame, so the outputs on valid frames are the
same alone or in a padded batch; frames beyond a length come out as 0.

Shapes: ``inputs [B, C_in, T]``, ``lengths [B]`` -> ``[B, hidden (x2 if bidirectional), T]``.

>>> layer = QRNN(8, 6, bidirectional=True)
>>> layer(torch.randn(2, 8, 5), torch.tensor([5, 3])).shape
torch.Size([2, 12, 5])
"""

from __future__ import annotations

import torch
from torch import nn

from cadence.bounds import PositiveInt
from cadence.models.masking import valid_frames

__all__ = ["QRNN", "reverse_valid_frames"]


class QRNN(nn.Module):
    """fo-pooling QRNN; ``window`` frames feed the gates; optional backward direction."""

    def __init__(self, input_size: PositiveInt, hidden_size: PositiveInt, window: PositiveInt = 1, bidirectional: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        self.window = window
        self.bidirectional = bidirectional
        # One convolution gives z, f and o for every frame; it looks back window - 1 frames (causal).
        directions = 2 if bidirectional else 1
        self.gates = nn.ModuleList(nn.Conv1d(input_size, 3 * hidden_size, window) for _ in range(directions))

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # [B, C, T], [B]
        mask = valid_frames(lengths, inputs.shape[-1]).to(inputs.dtype)  # [B, 1, T]
        inputs = inputs * mask
        outputs = [self.direction(self.gates[0], inputs)]
        if self.bidirectional:
            backwards = reverse_valid_frames(inputs, lengths)
            outputs.append(reverse_valid_frames(self.direction(self.gates[1], backwards), lengths))
        return torch.cat(outputs, dim=1) * mask  # [B, H * directions, T]

    def direction(self, gates: nn.Conv1d, inputs: torch.Tensor) -> torch.Tensor:
        """One left-to-right pass: ``[B, C, T]`` -> ``[B, H, T]``."""
        padded = nn.functional.pad(inputs, (self.window - 1, 0))  # causal: frame t sees t - window + 1 .. t
        candidate, forget, output = gates(padded).chunk(3, dim=1)  # each [B, H, T]
        candidate, forget, output = torch.tanh(candidate), torch.sigmoid(forget), torch.sigmoid(output)
        kept = (1 - forget) * candidate  # [B, H, T]
        cell = torch.zeros_like(kept[..., 0])  # [B, H]
        cells = []
        for frame in range(kept.shape[-1]):
            cell = forget[..., frame] * cell + kept[..., frame]
            cells.append(cell)
        return output * torch.stack(cells, dim=-1) if cells else kept  # [B, H, T]

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, window={self.window}, bidirectional={self.bidirectional}"


def reverse_valid_frames(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``values [B, C, T]`` with each utterance's first ``lengths[b]`` frames in reverse order
    (padding stays where it is): applying it twice gives ``values`` back.

    >>> reverse_valid_frames(torch.tensor([[[1, 2, 3, 0]]]), torch.tensor([3]))
    tensor([[[3, 2, 1, 0]]])
    """
    frames = values.shape[-1]
    positions = torch.arange(frames, device=values.device)[None, :]  # [1, T]
    lengths = lengths.to(values.device)[:, None]  # [B, 1]
    source = torch.where(positions < lengths, lengths - 1 - positions, positions)  # [B, T]
    return values.gather(-1, source[:, None, :].expand_as(values))
