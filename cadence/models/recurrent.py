"""A recurrent layer over a padded batch: each utterance read to its own length only.

Two ways, the same outputs (tested):

- packed (training, evaluation): ``pack_padded_sequence``, the RNN, ``pad_packed_sequence``;
- unpacked (``torch.export`` and ONNX, which cannot trace a PackedSequence): the forward
  direction reads the right-padded batch as it is (padding comes after every valid frame, so
  it never reaches them); the backward direction reads a copy with each utterance moved to
  the end of its row (the padding then comes first, and the backward pass meets it last),
  and its outputs are moved back. A bidirectional layer runs twice, so this is for export only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cadence.models.masking import valid_frames

__all__ = ["run_recurrent"]


def run_recurrent(rnn: nn.RNNBase, inputs: torch.Tensor, lengths: torch.Tensor, packed: bool = True) -> torch.Tensor:
    """Outputs ``[B, T, H]`` (``[B, T, 2H]`` bidirectional) of ``rnn`` (batch first) over
    ``inputs`` ``[B, T, F]``, each row read to ``lengths[b]`` frames; zero beyond."""
    frames = inputs.shape[1]
    if packed:
        # pack_padded_sequence wants the lengths on the CPU: a host/device sync on accelerators.
        sequence = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, _ = rnn(sequence)
        return pad_packed_sequence(output, batch_first=True, total_length=frames)[0]
    if rnn.bidirectional and rnn.num_layers > 1:
        raise ValueError("an unpacked bidirectional RNN must have one layer (stack single-layer RNNs instead)")
    mask = valid_frames(lengths, frames).transpose(1, 2).to(inputs.dtype)  # [B, T, 1]
    forward, _ = rnn(inputs)  # [B, T, D*H]
    if not rnn.bidirectional:
        return forward * mask
    shift = (frames - lengths.to(inputs.device))[:, None]  # [B, 1]: the padding of each row
    positions = torch.arange(frames, device=inputs.device)[None, :]  # [1, T]
    at_end = _rows_gathered(inputs, (positions - shift) % frames)  # row b: padding, then its frames
    backward, _ = rnn(at_end)
    backward = _rows_gathered(backward, (positions + shift) % frames)  # each frame back in its place
    half = forward.shape[-1] // 2
    return torch.cat([forward[..., :half], backward[..., half:]], dim=-1) * mask


def _rows_gathered(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b, t], :]`` for every b, t: ``values`` [B, T, C], ``index`` [B, T]."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))
