"""Sequence-to-sequence speech recognition with time-depth separable (TDS) convolutions (Hannun et al. 2019).

Shapes: features [B, n_mels, T] and lengths [B] in; memory [B, S, key_value_size] with
S = ceil(T / 2 ** groups) (every group starts with a stride-2 convolution over time); the decoder
emits logits [B, num_classes] per step (class 0 = <sos> as input, <eos> as output). See
:mod:`cadence.models.seq2seq` for the contracts.

Encoder, as in the paper: ``groups`` groups, each a sub-sampling layer (a 2-D convolution with a
``kernel_size x 1`` kernel over time, stride 2 in time, then ReLU, dropout, layer norm) followed by
``blocks_per_group`` TDS blocks. The hidden state of a frame is ``channels x width`` values with
width = n_mels; group g has ``channels + g * channel_growth`` channels (the paper's 10, 14, 18).
A TDS block is a time convolution on the ``[B, channels, width, T]`` view (ReLU, dropout, residual,
layer norm over the whole frame), then a fully connected block (linear, ReLU, dropout, linear,
dropout, residual, layer norm). A final linear layer maps each frame to ``key_value_size``.

Decoder, simplified from the paper: an embedding of the previous class and one GRU layer give the
query; inner-product attention, scaled by 1/sqrt(size), reads the memory, which serves as both the
keys and the values; a linear layer maps [query, summary] to the classes. Left out: the paper's
soft-window attention prior, random (scheduled) sampling and label smoothing belong to training,
not to the model. ``ctc_head: true`` adds a linear CTC output on the memory (joint CTC-attention
training; off by default, like every loss the task does not ask for).

Frames beyond a length never change valid outputs: padding is zeroed before every time
convolution (so it looks like the convolution's own zero padding), layer norms and linear layers
work frame by frame, and attention weights are 0 beyond each memory length.

Stochastic depth (Huang et al. 2016), ``stochastic_depth: p`` (0 = off, the default): in training,
each TDS block is dropped as a whole for the batch (its input passes through unchanged, layer norms
included) with a probability that rises linearly with depth, the usual "linear decay" schedule:
block ``l`` of ``L`` (1-based, counted over all groups) with ``l / L * p``, so 0 at the input and
``p`` at the last block. A kept block scales its two residual branches by ``1 / (1 - p_l)``, so
their expected contribution is the one at evaluation, where every block runs unscaled. One decision
per block per batch (not per example), drawn from torch's global CPU generator only while
training with ``p > 0`` (so ``p = 0`` draws nothing, and exact resume, which checkpoints that
generator, holds). ``p`` is read at every forward: ``schedules: {model.stochastic_depth: ...}`` works.
A dropped block is not run at all (that saves its time), so its parameters get no gradient from
that batch: under DistributedDataParallel that needs ``find_unused_parameters=True``.

    >>> model = TDSSeq2Seq(num_classes=12, channels=2, channel_growth=1, blocks_per_group=1, key_value_size=16)
    >>> features, lengths = torch.randn(2, 40, 50), torch.tensor([50, 33])
    >>> logits, memory, memory_lengths = model(features, lengths, torch.zeros(2, 4, dtype=torch.long))
    >>> logits.shape, memory.shape, memory_lengths.tolist()
    (torch.Size([2, 4, 12]), torch.Size([2, 7, 16]), [7, 5])
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from cadence.bounds import NonNegativeInt, OddInt, PositiveInt, Probability, ProperFraction
from cadence.models.attention import masked_softmax
from cadence.models.masking import check_feature_shape, valid_frames, valid_positions
from cadence.models.stochastic_depth import checked_drop_probability, passed_over
from cadence.registry import MODELS

__all__ = ["KeyValueDecoder", "TDSBlock", "TDSEncoder", "TDSSeq2Seq"]


def halve_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after a stride-2 convolution with an odd kernel and "same" padding: ceil(L / 2)."""
    return torch.div(lengths + 1, 2, rounding_mode="floor")


def scaled(branch: torch.Tensor, scale: float) -> torch.Tensor:
    return branch if scale == 1.0 else branch * scale  # no extra operation when nothing is scaled


class TDSBlock(nn.Module):
    """A time convolution sub-block then a fully connected sub-block, on ``[B, T, channels * width]``.

    ``residual_scale`` multiplies both residual branches (stochastic depth's ``1 / (1 - p)`` for a
    block kept in training; 1 otherwise)."""

    def __init__(self, channels: int, width: int, kernel_size: int, dropout: float):
        super().__init__()
        self.channels, self.width = channels, width
        size = channels * width
        self.convolution = nn.Conv2d(channels, channels, (1, kernel_size), padding=(0, kernel_size // 2))
        self.convolution_norm = nn.LayerNorm(size)
        self.fully_connected = nn.Sequential(
            nn.Linear(size, size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(size, size), nn.Dropout(dropout)
        )
        self.fully_connected_norm = nn.LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, residual_scale: float = 1.0) -> torch.Tensor:
        batch, frames, size = hidden.shape  # hidden [B, T, C*W], mask [B, T, 1]
        view = (hidden * mask).view(batch, frames, self.channels, self.width).permute(0, 2, 3, 1)  # [B, C, W, T]
        convolved = self.dropout(F.relu(self.convolution(view)))  # [B, C, W, T]
        convolved = convolved.permute(0, 3, 1, 2).reshape(batch, frames, size)  # [B, T, C*W]
        hidden = self.convolution_norm(hidden + scaled(convolved, residual_scale))
        return self.fully_connected_norm(hidden + scaled(self.fully_connected(hidden), residual_scale))  # [B, T, C*W]


class TDSEncoder(nn.Module):
    """features [B, F, T] -> memory [B, ceil(T / 2 ** groups), key_value_size] (see the module docstring).

    ``stochastic_depth`` (read at every forward) is the drop probability of the last TDS block."""

    def __init__(
        self,
        n_mels: int,
        groups: int,
        channels: int,
        channel_growth: int,
        blocks_per_group: int,
        kernel_size: int,
        key_value_size: int,
        dropout: float,
        stochastic_depth: float = 0.0,
    ):
        super().__init__()
        self.width = n_mels
        self.stochastic_depth = stochastic_depth
        self.subsampling = nn.ModuleList()
        self.subsampling_norms = nn.ModuleList()
        self.groups = nn.ModuleList()
        inputs = 1
        for group in range(groups):
            outputs = channels + group * channel_growth
            self.subsampling.append(nn.Conv2d(inputs, outputs, (1, kernel_size), stride=(1, 2), padding=(0, kernel_size // 2)))
            self.subsampling_norms.append(nn.LayerNorm(outputs * n_mels))
            self.groups.append(nn.ModuleList(TDSBlock(outputs, n_mels, kernel_size, dropout) for _ in range(blocks_per_group)))
            inputs = outputs
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(inputs * n_mels, key_value_size)

    @property
    def stochastic_depth(self) -> float:
        return self._stochastic_depth

    @stochastic_depth.setter
    def stochastic_depth(self, value: float) -> None:
        self._stochastic_depth = checked_drop_probability(value)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in self.groups:
            lengths = halve_lengths(lengths)
        return lengths

    def block_scales(self) -> list[float | None]:
        """Per TDS block, in order: None to drop it for this batch, else its residual scale.

        Draws one number per block from torch's global CPU generator, only in training with
        ``stochastic_depth > 0`` (a CPU draw: no wait for an accelerator)."""
        count = sum(len(blocks) for blocks in self.groups)
        last = self.stochastic_depth
        if not self.training or last == 0.0 or count == 0:
            return [1.0] * count
        probabilities = [last * (index + 1) / count for index in range(count)]  # linear in depth, p at the last
        draws = torch.rand(count).tolist()
        return [None if draw < p else 1.0 / (1.0 - p) for draw, p in zip(draws, probabilities)]

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_feature_shape(features, self.width, "tds")
        scales = iter(self.block_scales())
        batch, frames = features.shape[0], features.shape[-1]
        lengths = lengths.to(features.device)
        hidden = features.transpose(1, 2)  # [B, T, 1 * W]: one channel, width = the feature bins
        for subsampling, norm, blocks in zip(self.subsampling, self.subsampling_norms, self.groups):
            mask = valid_frames(lengths, frames).transpose(1, 2)  # [B, T, 1]
            view = (hidden * mask).view(batch, frames, subsampling.in_channels, self.width).permute(0, 2, 3, 1)  # [B, C, W, T]
            # Zeroed padding looks like the convolution's own zero padding.
            convolved = self.dropout(F.relu(subsampling(view)))  # [B, C', W, T']
            lengths, frames = halve_lengths(lengths), convolved.shape[-1]
            hidden = norm(convolved.permute(0, 3, 1, 2).reshape(batch, frames, -1))  # [B, T', C' * W]
            mask = valid_frames(lengths, frames).transpose(1, 2)  # [B, T', 1]
            for block in blocks:
                scale = next(scales)
                if scale is None:  # dropped for this batch: its input passes through
                    hidden = passed_over(hidden, block)
                else:
                    hidden = block(hidden, mask, scale)
        return self.output(hidden), lengths  # [B, S, key_value_size], [B]


class KeyValueDecoder(nn.Module):
    """GRU decoder with inner-product attention (the AttentionDecoder protocol of :mod:`cadence.models.seq2seq`).

    State (every tensor batch first): ``memory [B, S, D]`` (keys and values), ``memory_mask [B, S]``
    (True on valid frames), ``hidden [B, D]`` (the GRU state), ``attention_weights [B, S]``.
    No input feeding, so :meth:`teacher_forcing` runs all steps at once (same weights as :meth:`step`).
    """

    def __init__(self, num_classes: int, size: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, size)
        self.recurrent = nn.GRU(size, size, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(2 * size, num_classes)

    def initial_state(self, memory: torch.Tensor, memory_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, frames, size = memory.shape
        mask = valid_positions(memory_lengths.to(memory.device), frames)  # [B, S]
        return {
            "memory": memory,
            "memory_mask": mask,
            "hidden": memory.new_zeros(batch, size),
            "attention_weights": mask.to(memory.dtype) / mask.sum(1, keepdim=True).clamp(min=1),
        }

    def attend(
        self, queries: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries [N, U, D] -> logits [N, U, C] and attention weights [N, U, S]."""
        scores = torch.bmm(queries, memory.transpose(1, 2)) / math.sqrt(memory.shape[-1])  # [N, U, S]
        weights = masked_softmax(scores, memory_mask.unsqueeze(1))  # [N, U, S]
        summaries = torch.bmm(weights, memory)  # [N, U, D]
        return self.output(self.dropout(torch.cat([queries, summaries], dim=2))), weights

    def step(
        self, previous_classes: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = self.dropout(self.embedding(previous_classes)).unsqueeze(1)  # [N, 1, D]
        queries, _ = self.recurrent(inputs, state["hidden"].unsqueeze(0).contiguous())  # [N, 1, D]
        logits, weights = self.attend(queries, state["memory"], state["memory_mask"])
        new_state = dict(state, hidden=queries[:, 0], attention_weights=weights[:, 0])
        return logits[:, 0], new_state  # [N, C]

    def teacher_forcing(
        self, memory: torch.Tensor, memory_lengths: torch.Tensor, previous_classes: torch.Tensor
    ) -> torch.Tensor:
        """All steps at once: previous_classes [B, U] -> logits [B, U, C], equal to stepping U times."""
        mask = valid_positions(memory_lengths.to(memory.device), memory.shape[1])  # [B, S]
        queries, _ = self.recurrent(self.dropout(self.embedding(previous_classes)))  # [B, U, D], from a zero state
        return self.attend(queries, memory, mask)[0]


@MODELS.register("tds")
class TDSSeq2Seq(nn.Module):
    """The TDS encoder and its key-value attention decoder (see the module docstring)."""

    def __init__(
        self,
        num_classes: PositiveInt,
        n_mels: PositiveInt = 40,
        groups: PositiveInt = 3,
        channels: PositiveInt = 10,
        channel_growth: NonNegativeInt = 4,
        blocks_per_group: NonNegativeInt = 2,
        kernel_size: OddInt = 11,
        key_value_size: PositiveInt = 256,
        ctc_head: bool = False,
        dropout: ProperFraction = 0.1,
        stochastic_depth: Probability = 0.0,
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size must be odd (so frames stay aligned), got {kernel_size}")
        if groups < 1 or channels < 1 or blocks_per_group < 0 or channel_growth < 0:
            raise ValueError(
                f"model.groups and model.channels must be >= 1, model.blocks_per_group and model.channel_growth >= 0; "
                f"got {groups}, {channels}, {blocks_per_group}, {channel_growth}"
            )
        self.encoder = TDSEncoder(
            n_mels, groups, channels, channel_growth, blocks_per_group, kernel_size, key_value_size, dropout,
            stochastic_depth,
        )
        self.decoder = KeyValueDecoder(num_classes, key_value_size, dropout)
        self.ctc_head = nn.Linear(key_value_size, num_classes) if ctc_head else None

    @property
    def stochastic_depth(self) -> float:
        """The encoder's: the drop probability of the last TDS block (see the module docstring)."""
        return self.encoder.stochastic_depth

    @stochastic_depth.setter
    def stochastic_depth(self, value: float) -> None:
        self.encoder.stochastic_depth = value

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """[B] input frames -> [B] memory frames (what ``ctc_head`` outputs)."""
        return self.encoder.output_lengths(lengths)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(features, lengths)  # [B, S, D], [B]

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor, previous_classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        memory, memory_lengths = self.encode(features, lengths)
        return self.decoder.teacher_forcing(memory, memory_lengths, previous_classes), memory, memory_lengths
