"""The PASE+ encoder (Ravanelli et al., 2020): waveform in, one embedding every 10 ms out.

    waveform [B, S] ─► SincConv block ─► conv block 1 ─► ... ─► conv block 7 ─► QRNN ─► 1x1 ─┐
                           │                  │                        │                   + ─► batch norm (no affine) ─► [B, 256, T]
                           └──────── skips: each block pooled to the output rate, 1x1 ──────┘

- The first block is :class:`~cadence.models.sinc_conv.SincConv` (64 band-pass filters of 251
  taps, stride 1). Then conv blocks with ``kernels`` 20, 11, 11, 11, 11, 11, 11, ``strides`` 10,
  2, 1, 2, 1, 2, 2 and ``channels`` 64, 128, 128, 256, 256, 512, 512. Every block is convolution,
  batch norm (over valid frames only), PReLU.
- The total stride is the product of ``strides`` (160 samples by default): 10 ms frames at
  16 kHz, 20 ms at 8 kHz (FSDD). An utterance of ``S`` samples gives ``S // 160`` frames: each
  block pads ``kernel - stride`` samples around its input, so it maps ``n`` frames to ``n // stride``.
- ``rnn``: a bidirectional :class:`~cadence.models.qrnn.QRNN` (the paper's), a bidirectional
  GRU (for comparison), or none; ``rnn_hidden`` units a direction.
- Skip connections: every block's output (the SincConv block's and each conv block's) is
  average-pooled to the output frame rate, projected by a 1x1 convolution to ``output_size``
  and added to the projected recurrent output (pooling before projecting: both are linear, so
  it equals the paper's order and costs far less on the 16,000-frame SincConv output).
- The output goes through a batch norm without scale or shift, as in PASE+, so every
  dimension of the embedding has zero mean and unit variance over the training data.

Padded batches: ``lengths`` are samples; samples beyond them are treated as silence, every
block's output is zeroed beyond its own lengths and batch norm statistics skip padding, so an
utterance gets the same frames alone or in a padded batch (in eval mode).

>>> encoder = PASEEncoder(sample_rate=8000, channels=[8, 8, 8, 8, 8, 8, 8], sinc_filters=8, rnn_hidden=8, output_size=16)
>>> frames, frame_lengths = encoder(torch.randn(2, 3200), torch.tensor([3200, 1700]))
>>> frames.shape, frame_lengths.tolist(), encoder.stride, encoder.frame_shift_s
(torch.Size([2, 16, 20]), [20, 10], 160, 0.02)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cadence.bounds import OddInt, PositiveInt
from cadence.errors import ConfigError
from cadence.models.masking import MaskedBatchNorm1d, valid_frames
from cadence.models.qrnn import QRNN
from cadence.models.sinc_conv import SincConv
from cadence.registry import MODELS

__all__ = ["PASEEncoder"]


@MODELS.register("pase_encoder")
class PASEEncoder(nn.Module):
    """SincConv and strided conv blocks, a bidirectional QRNN, skip connections, a normalized output."""

    def __init__(
        self,
        sample_rate: PositiveInt = 16000,
        sinc_filters: PositiveInt = 64,
        sinc_kernel: OddInt = 251,
        kernels: list[PositiveInt] = (20, 11, 11, 11, 11, 11, 11),
        strides: list[PositiveInt] = (10, 2, 1, 2, 1, 2, 2),
        channels: list[PositiveInt] = (64, 128, 128, 256, 256, 512, 512),
        rnn: Literal["qrnn", "gru", "none"] = "qrnn",
        rnn_hidden: PositiveInt = 256,
        output_size: PositiveInt = 256,
        skips: bool = True,
    ):
        super().__init__()
        kernels, strides, channels = list(kernels), list(strides), list(channels)
        if not len(kernels) == len(strides) == len(channels):
            raise ConfigError(f"model.kernels, model.strides and model.channels need one entry per conv block, got "
                              f"{len(kernels)}, {len(strides)} and {len(channels)}")
        for block, (kernel, stride) in enumerate(zip(kernels, strides)):
            if kernel < stride:
                raise ConfigError(f"model.kernels[{block}] = {kernel} is shorter than model.strides[{block}] = {stride}: "
                                  "the block would skip samples; give each kernel at least its stride")
        self.sample_rate = sample_rate
        self.kernels, self.strides = kernels, strides
        self.stride = math.prod(strides)  # input samples per output frame
        self.output_size = output_size
        self.sinc = SincConv(sinc_filters, sinc_kernel, sample_rate)
        self.convolutions = nn.ModuleList()
        widths = [sinc_filters, *channels]
        for inputs, outputs, kernel, stride in zip(widths, channels, kernels, strides):
            self.convolutions.append(nn.Conv1d(inputs, outputs, kernel, stride=stride, bias=False))  # the norm has a bias
        self.norms = nn.ModuleList(MaskedBatchNorm1d(width) for width in widths)
        self.activations = nn.ModuleList(nn.PReLU(width) for width in widths)
        self.rnn_type = rnn
        if rnn == "qrnn":
            self.rnn = QRNN(channels[-1], rnn_hidden, bidirectional=True)
        elif rnn == "gru":
            self.rnn = nn.GRU(channels[-1], rnn_hidden, batch_first=True, bidirectional=True)
        else:
            self.rnn = None
        self.projection = nn.Conv1d(2 * rnn_hidden if self.rnn is not None else channels[-1], output_size, 1)
        self.skips = nn.ModuleList(nn.Conv1d(width, output_size, 1, bias=False) for width in widths) if skips else None
        self.output_norm = MaskedBatchNorm1d(output_size, affine=False)

    @property
    def frame_shift_s(self) -> float:
        return self.stride / self.sample_rate

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if waveforms.dim() == 3 and waveforms.shape[1] == 1:
            waveforms = waveforms[:, 0]
        if waveforms.dim() != 2:
            raise ConfigError(f"pase_encoder takes waveforms [batch, samples], got shape {list(waveforms.shape)}: "
                              "give it no features section (it learns its own filters from the waveform)")
        lengths = lengths.to(waveforms.device)
        hidden = waveforms[:, None, :] * valid_frames(lengths, waveforms.shape[-1])  # [B, 1, S], silence beyond lengths
        hidden = self.sinc(hidden)  # [B, filters, S]
        outputs = [self.finish_block(0, hidden, lengths)]
        block_lengths = [lengths]
        for block, convolution in enumerate(self.convolutions, start=1):
            hidden, lengths = self.strided(convolution, outputs[-1], lengths)
            outputs.append(self.finish_block(block, hidden, lengths))
            block_lengths.append(lengths)
        frames = outputs[-1].shape[-1]
        embedding = self.projection(self.recurrent(outputs[-1], lengths))  # [B, output_size, T]
        if self.skips is not None:
            strides_left = [math.prod(self.strides[block:]) for block in range(len(outputs))]  # block rate -> output rate
            for skip, output, pooled_by in zip(self.skips, outputs, strides_left):
                pooled = F.avg_pool1d(output[..., : frames * pooled_by], pooled_by) if pooled_by > 1 else output
                embedding = embedding + skip(pooled)
        mask = valid_frames(lengths, frames)
        return self.output_norm(embedding, mask) * mask, lengths  # [B, output_size, T], [B]

    def finish_block(self, block: int, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Batch norm over valid frames, PReLU, and zeros beyond each length."""
        mask = valid_frames(lengths, hidden.shape[-1])  # [B, 1, T]
        return self.activations[block](self.norms[block](hidden, mask)) * mask

    def strided(self, convolution: nn.Conv1d, hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, n]`` -> ``[B, C', n // stride]``: ``kernel - stride`` samples of padding, split
        around the input, so output frame ``t`` is centred on input frames ``t * stride .. (t + 1) * stride``."""
        kernel, stride = convolution.kernel_size[0], convolution.stride[0]
        frames = hidden.shape[-1] // stride
        left = (kernel - stride) // 2
        right = kernel - stride - left + max(0, stride - hidden.shape[-1])  # an input shorter than a stride gives 0 frames
        return convolution(F.pad(hidden, (left, right)))[..., :frames], lengths // stride

    def recurrent(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The bidirectional recurrent layer over the last block's frames: ``[B, C, T]`` -> ``[B, 2H, T]``."""
        if self.rnn is None:
            return hidden
        if isinstance(self.rnn, QRNN):
            return self.rnn(hidden, lengths)
        frames = hidden.shape[-1]
        # pack_padded_sequence wants lengths >= 1 on the CPU; an empty utterance's frame is masked below.
        packed = pack_padded_sequence(hidden.transpose(1, 2), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        output, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=frames)  # [B, T, 2H]
        return output.transpose(1, 2) * valid_frames(lengths, frames)
