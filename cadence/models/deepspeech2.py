"""Deep Speech 2 (Amodei et al. 2016): 2-D convolutions, recurrent layers, CTC outputs.

Shapes: features [B, n_mels, T] and lengths [B] (valid frames) in;
logits [B, T', num_classes] (class 0 = CTC blank) and output_lengths [B] out, where
T' = ceil(T / time_stride) (every convolution has an odd time kernel and "same" padding).

What is kept from the paper: a 2-D convolution front-end over (frequency, time) with batch
norm and clipped ReLU (hardtanh to [0, 20]); stacked (bi)directional GRU/LSTM layers whose
two directions are summed (which halves the next layer's input); sequence-wise batch norm
on the input of every recurrent layer after the first, with statistics over valid frames
only; a row convolution ("lookahead") over a few future frames for unidirectional models;
a linear layer to the classes. Sizes default to a small model that trains on a 2-core CPU.

Frames beyond a length never change valid outputs: padding is zeroed before every
convolution (so it looks like the convolution's own zero padding), the recurrent layers run
on packed sequences, and batch norm statistics skip padding. So an utterance gets the same
outputs alone or inside a padded batch (in eval mode).

Regularization: ``dropout`` on the input of every recurrent layer but the first (after its batch
norm) and before the output layer; ``conv_dropout`` after every convolution block (so also on the
first recurrent layer's input; 0, i.e. none, by default); and stochastic depth over the recurrent
stack, ``stochastic_depth: p`` (0 = off, the default). The stack has no residual connections, so
stochastic depth here drops whole layers (LayerDrop): in training, a dropped layer (its batch norm,
dropout and recurrent layer) is skipped for the batch and its input passes on unchanged; a kept
layer runs as it is (there is no residual branch to rescale, so nothing is scaled); in evaluation
every layer runs. Layer ``l`` of ``N`` (1-based, over the whole stack) is dropped with
probability ``l / N * p``, the usual linear schedule of Huang et al. 2016 (0 at the input, ``p``
at the last layer). Only a layer whose output has its input's size can pass its input on: the two
directions are summed, so every layer gives ``rnn_hidden`` features, and every layer after the
first takes ``rnn_hidden`` (they can all be skipped), while the first takes ``conv_channels x``
the frequency bins left by the convolutions and can be skipped only when that equals
``rnn_hidden`` (:attr:`DeepSpeech2.skippable_layers` lists them). A model with no such layer (a
single recurrent layer of another size) refuses ``p > 0`` with a ValueError. One decision per
layer per batch (not per example), drawn from torch's global CPU generator only while training
with ``p > 0`` (so ``p = 0`` draws nothing, and exact resume, which checkpoints that generator,
holds). ``p`` is read at every forward: ``schedules: {model.stochastic_depth: ...}`` works.
A skipped layer's parameters get no gradient from that batch: under DistributedDataParallel that
needs ``find_unused_parameters=True``.

    >>> model = DeepSpeech2(num_classes=12, rnn_hidden=32, conv_channels=4)
    >>> logits, output_lengths = model(torch.randn(2, 40, 51), torch.tensor([51, 30]))
    >>> logits.shape, output_lengths.tolist()
    (torch.Size([2, 26, 12]), [26, 15])
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from cadence.bounds import NonNegativeInt, OddInt, PositiveInt, Probability, ProperFraction
from cadence.models.masking import MaskedBatchNorm1d, MaskedBatchNorm2d, check_feature_shape, valid_frames
from cadence.models.recurrent import run_recurrent
from cadence.models.stochastic_depth import checked_drop_probability, passed_over
from cadence.registry import MODELS

__all__ = ["DeepSpeech2", "split_stride", "strided_lengths"]


def strided_lengths(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """Frames after a convolution with an odd kernel, "same" padding and this stride: ceil(L / stride)."""
    return torch.div(lengths - 1, stride, rounding_mode="floor") + 1


def split_stride(total: int, layers: int) -> list[int]:
    """Spread a total stride over layers as evenly as its prime factors allow (largest first).

    >>> split_stride(4, 2), split_stride(2, 2), split_stride(8, 2), split_stride(6, 3)
    ([2, 2], [2, 1], [4, 2], [3, 2, 1])
    """
    factors, remaining, divisor = [], total, 2
    while remaining > 1:
        while remaining % divisor == 0:
            factors.append(divisor)
            remaining //= divisor
        divisor += 1
    strides = [1] * layers
    for factor in sorted(factors, reverse=True):
        smallest = min(range(layers), key=lambda layer: strides[layer])  # first layer on ties
        strides[smallest] *= factor
    return strides


@MODELS.register("deepspeech2")
class DeepSpeech2(nn.Module):
    """The Deep Speech 2 acoustic model (see the module docstring).

    ``time_stride`` is the total subsampling in time, spread over the convolutions by
    :func:`split_stride`; ``frequency_stride`` applies in every convolution.
    ``lookahead`` > 0 adds a row convolution over that many future frames (only for
    unidirectional models: a bidirectional model already sees the whole utterance).
    """

    def __init__(
        self,
        num_classes: PositiveInt,
        n_mels: PositiveInt = 40,
        conv_layers: PositiveInt = 2,
        conv_channels: PositiveInt = 32,
        frequency_kernel: OddInt = 11,
        time_kernel: OddInt = 5,
        frequency_stride: PositiveInt = 2,
        time_stride: PositiveInt = 2,
        activation: Literal["hardtanh", "relu"] = "hardtanh",
        rnn_type: Literal["gru", "lstm"] = "gru",
        rnn_layers: PositiveInt = 2,
        rnn_hidden: PositiveInt = 128,
        bidirectional: bool = True,
        lookahead: NonNegativeInt = 0,
        dropout: ProperFraction = 0.1,
        conv_dropout: ProperFraction = 0.0,
        stochastic_depth: Probability = 0.0,
    ):
        super().__init__()
        if frequency_kernel % 2 == 0 or time_kernel % 2 == 0:
            raise ValueError(
                f"model.frequency_kernel and model.time_kernel must be odd (so frames stay aligned), "
                f"got {frequency_kernel} and {time_kernel}"
            )
        self.n_mels = n_mels
        if conv_layers < 1 or rnn_layers < 1:
            raise ValueError(f"model.conv_layers and model.rnn_layers must be >= 1, got {conv_layers} and {rnn_layers}")
        if time_stride < 1:
            raise ValueError(f"model.time_stride must be >= 1, got {time_stride}")
        self.time_strides = split_stride(time_stride, conv_layers)
        if max(self.time_strides) > time_kernel:
            raise ValueError(
                f"model.time_kernel ({time_kernel}) is shorter than a convolution's time stride "
                f"({max(self.time_strides)}, from time_stride={time_stride} over {conv_layers} layers): frames would be skipped"
            )
        if lookahead < 0 or (lookahead > 0 and bidirectional):
            raise ValueError(
                f"model.lookahead is a row convolution over future frames for unidirectional models: "
                f"set bidirectional: false or lookahead: 0 (got lookahead={lookahead}, bidirectional={bidirectional})"
            )
        self.bidirectional = bidirectional
        # False: the recurrent layers read the padded batch without a PackedSequence, which
        # torch.export and ONNX cannot trace (cadence export sets it; the outputs are the same).
        self.packed_sequences = True
        # Clipped ReLU as in the paper: keeps activations bounded, which helps recurrent layers.
        self.activation = nn.Hardtanh(0.0, 20.0) if activation == "hardtanh" else nn.ReLU()

        self.convolutions = nn.ModuleList()
        self.conv_norms = nn.ModuleList()
        channels, bins = 1, n_mels
        for stride in self.time_strides:
            self.convolutions.append(
                nn.Conv2d(
                    channels,
                    conv_channels,
                    (frequency_kernel, time_kernel),
                    stride=(frequency_stride, stride),
                    padding=(frequency_kernel // 2, time_kernel // 2),
                    bias=False,  # the batch norm right after has its own
                )
            )
            self.conv_norms.append(MaskedBatchNorm2d(conv_channels))
            channels, bins = conv_channels, (bins - 1) // frequency_stride + 1
        self.conv_dropout = nn.Dropout(conv_dropout)

        recurrent = nn.GRU if rnn_type == "gru" else nn.LSTM
        self.recurrent_layers = nn.ModuleList()
        self.recurrent_norms = nn.ModuleList()  # before every recurrent layer but the first
        inputs = channels * bins
        self.rnn_hidden = rnn_hidden
        self.first_recurrent_inputs = inputs
        # Layers that stochastic depth may skip: output (directions summed) as large as the input.
        sizes = [inputs] + [rnn_hidden] * (rnn_layers - 1)  # each layer's input
        self.skippable_layers = tuple(layer for layer, size in enumerate(sizes) if size == rnn_hidden)
        for layer in range(rnn_layers):
            if layer > 0:
                self.recurrent_norms.append(MaskedBatchNorm1d(inputs))
            self.recurrent_layers.append(recurrent(inputs, rnn_hidden, batch_first=True, bidirectional=bidirectional))
            inputs = rnn_hidden
        # Row convolution: output frame t mixes frames t..t+lookahead, one filter per feature.
        self.lookahead = nn.Conv1d(rnn_hidden, rnn_hidden, lookahead + 1, groups=rnn_hidden, bias=False) if lookahead else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(rnn_hidden, num_classes)
        self.stochastic_depth = stochastic_depth  # checked against skippable_layers

    @property
    def stochastic_depth(self) -> float:
        """The drop probability of the last recurrent layer (see the module docstring); read at every forward."""
        return self._stochastic_depth

    @stochastic_depth.setter
    def stochastic_depth(self, value: float) -> None:
        value = checked_drop_probability(value)
        if value > 0 and not self.skippable_layers:
            raise ValueError(
                f"model.stochastic_depth skips recurrent layers whose output has the size of their input, and this model "
                f"has none: its one recurrent layer takes {self.first_recurrent_inputs} features (conv_channels x the "
                f"frequency bins left by the convolutions) and gives rnn_hidden={self.rnn_hidden}; use rnn_layers >= 2, "
                f"or stochastic_depth: 0"
            )
        self._stochastic_depth = value

    def dropped_layers(self) -> frozenset[int]:
        """The recurrent layers stochastic depth skips for this batch (none in evaluation or with p = 0).

        Draws one number per skippable layer from torch's global CPU generator (no wait for an accelerator)."""
        last = self.stochastic_depth
        if not self.training or last == 0.0:
            return frozenset()
        count = len(self.recurrent_layers)
        draws = torch.rand(len(self.skippable_layers)).tolist()
        # Layer l of N (1-based) is dropped with probability l / N * p: linear in depth, p at the last.
        return frozenset(layer for layer, draw in zip(self.skippable_layers, draws) if draw < last * (layer + 1) / count)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """[B] input frames -> [B] output frames (ceil division by each convolution's stride)."""
        for stride in self.time_strides:
            lengths = strided_lengths(lengths, stride)
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_feature_shape(features, self.n_mels, "deepspeech2")
        lengths = lengths.to(features.device)
        hidden = features.unsqueeze(1)  # [B, 1, F, T]
        for convolution, norm, stride in zip(self.convolutions, self.conv_norms, self.time_strides):
            mask = valid_frames(lengths, hidden.shape[-1]).unsqueeze(1)  # [B, 1, 1, T]
            hidden = convolution(hidden * mask)  # padding looks like the convolution's own zero padding
            lengths = strided_lengths(lengths, stride)
            mask = valid_frames(lengths, hidden.shape[-1]).unsqueeze(1)  # [B, 1, 1, T']
            hidden = self.conv_dropout(self.activation(norm(hidden, mask)))  # [B, C, F', T']
        batch, channels, bins, frames = hidden.shape
        hidden = hidden.reshape(batch, channels * bins, frames)  # [B, C*F', T']
        mask = valid_frames(lengths, frames)  # [B, 1, T']
        dropped = self.dropped_layers()
        for layer, recurrent in enumerate(self.recurrent_layers):
            if layer in dropped:  # skipped for this batch: its input ([B, H, T'], its output's size) passes on
                hidden = passed_over(hidden, recurrent, *([self.recurrent_norms[layer - 1]] if layer > 0 else []))
                continue
            if layer > 0:
                hidden = self.dropout(self.recurrent_norms[layer - 1](hidden, mask))
            output = run_recurrent(recurrent, hidden.transpose(1, 2), lengths, packed=self.packed_sequences)  # [B, T', H or 2H]
            if self.bidirectional:
                output = output.view(batch, frames, 2, -1).sum(2)  # the paper sums the directions: [B, T', H]
            hidden = output.transpose(1, 2)  # [B, H, T']
        if self.lookahead is not None:
            future = F.pad(hidden * mask, (0, self.lookahead.kernel_size[0] - 1))  # zeros after every length
            hidden = self.activation(self.lookahead(future))  # [B, H, T']
        logits = self.head(self.dropout(hidden.transpose(1, 2)))  # [B, T', C]
        return logits, lengths
