"""Listen, Attend and Spell (Chan et al. 2016): a pyramidal BiLSTM listener and an attending LSTM speller.

Shapes: features [B, n_mels, T] and lengths [B] in; the listener's memory [B, S, 2 * listener_hidden]
with S = ceil(T / 2 ** pyramid_layers); the speller emits logits [B, num_classes] per step
(class 0 = <sos> as input, <eos> as output). See :mod:`cadence.models.seq2seq` for the contracts.

Listener: ``listener_layers`` BiLSTM layers, then ``pyramid_layers`` pyramidal layers, each of which
concatenates adjacent frame pairs (halving time; an odd last frame is paired with a zero frame)
and runs a BiLSTM on them. Speller: an LSTMCell stack fed with the previous class's embedding and
the previous attention context ("input feeding"); its top state queries the memory; an MLP maps
[state, context] to the classes. Attention is location-aware (Chorowski et al. 2015) or
content-only (``content_score``: Chan et al.'s dot product, or additive).
``ctc_head: true`` adds a linear CTC output on the memory (joint CTC-attention training, Kim et al. 2017),
which makes attention learn to align much sooner on small data; it is off by default because a head
that no loss uses leaves parameters without gradients (which DistributedDataParallel rejects).

Dropout: ``dropout`` between the listener's layers, between the speller's LSTMCell layers and inside
the output MLP; ``embedding_dropout`` on the embedding of the previous class, the speller's input
(0, i.e. none, by default). All are ``nn.Dropout`` modules, so a ``dropout`` schedule sets them.

    >>> model = ListenAttendSpell(num_classes=12, listener_hidden=16, speller_hidden=16, embedding_size=8, attention_size=8)
    >>> features, lengths = torch.randn(2, 40, 50), torch.tensor([50, 33])
    >>> logits, memory, memory_lengths = model(features, lengths, torch.zeros(2, 4, dtype=torch.long))
    >>> logits.shape, memory.shape, memory_lengths.tolist()
    (torch.Size([2, 4, 12]), torch.Size([2, 7, 32]), [7, 5])
    >>> state = model.decoder.initial_state(memory, memory_lengths)
    >>> step_logits, state = model.decoder.step(torch.zeros(2, dtype=torch.long), state)
    >>> step_logits.shape, state["attention_weights"].shape
    (torch.Size([2, 12]), torch.Size([2, 7]))
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cadence.bounds import NonNegativeInt, OddInt, PositiveInt, ProperFraction
from cadence.models.attention import ContentAttention, LocationAwareAttention
from cadence.models.masking import check_feature_shape, valid_frames, valid_positions
from cadence.models.seq2seq import teacher_forcing
from cadence.registry import MODELS

__all__ = ["ListenAttendSpell", "Listener", "Speller", "concatenate_frame_pairs"]


def concatenate_frame_pairs(hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, D] -> [B, ceil(T / 2), 2D]: frames 2t and 2t + 1 side by side; lengths halve, rounding up.

    ``hidden`` must be 0 beyond each length, so an odd last frame pairs with zeros whether it
    is followed by padding or by the end of the batch.

    >>> pairs, lengths = concatenate_frame_pairs(torch.arange(6.0).view(1, 3, 2), torch.tensor([3]))
    >>> pairs.tolist(), lengths.tolist()
    ([[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 0.0, 0.0]]], [2])
    """
    batch, frames, size = hidden.shape
    if frames % 2:
        hidden = torch.cat([hidden, hidden.new_zeros(batch, 1, size)], dim=1)
    return hidden.reshape(batch, (frames + 1) // 2, 2 * size), torch.div(lengths + 1, 2, rounding_mode="floor")


class Listener(nn.Module):
    """BiLSTM layers, then pyramidal BiLSTM layers: features [B, F, T] -> memory [B, S, 2 * hidden]."""

    def __init__(self, n_mels: int, hidden: int, layers: int, pyramid_layers: int, dropout: float):
        super().__init__()
        self.n_mels = n_mels
        self.pyramid_layers = pyramid_layers
        self.layers = nn.ModuleList()
        inputs = n_mels
        for layer in range(layers + pyramid_layers):
            is_pyramidal = layer >= layers
            self.layers.append(nn.LSTM(2 * inputs if is_pyramidal else inputs, hidden, batch_first=True, bidirectional=True))
            inputs = 2 * hidden
        self.first_pyramidal = layers
        self.dropout = nn.Dropout(dropout)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in range(self.pyramid_layers):
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_feature_shape(features, self.n_mels, "listen_attend_spell")
        lengths = lengths.to(features.device)
        hidden = (features * valid_frames(lengths, features.shape[-1])).transpose(1, 2)  # [B, T, F], 0 beyond lengths
        for index, lstm in enumerate(self.layers):
            if index > 0:
                hidden = self.dropout(hidden)
            if index >= self.first_pyramidal:
                hidden, lengths = concatenate_frame_pairs(hidden, lengths)  # [B, T/2, 2D]
            # Packing keeps padding out of the backward direction; it needs the lengths on the CPU
            # (a host/device sync on accelerators).
            packed = pack_padded_sequence(hidden, lengths.cpu(), batch_first=True, enforce_sorted=False)
            hidden, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=hidden.shape[1])
        return hidden, lengths  # [B, S, 2H], 0 beyond lengths; [B]


class Speller(nn.Module):
    """The attention decoder (the AttentionDecoder protocol of :mod:`cadence.models.seq2seq`).

    State (every tensor batch first): ``memory [B, S, D]``, ``memory_mask [B, S]`` (True on valid
    frames), ``keys [B, S, A]`` (the memory's attention projection, computed once),
    ``hidden_<layer>``/``cell_<layer> [B, H]`` (the LSTMCell states), ``context [B, D]`` (the
    previous step's attention context, fed back as input), ``attention_weights [B, S]``.
    """

    def __init__(
        self,
        num_classes: int,
        memory_size: int,
        embedding_size: int,
        hidden: int,
        layers: int,
        attention: Literal["location", "content"],
        content_score: Literal["dot", "additive"],
        attention_size: int,
        location_channels: int,
        location_kernel: int,
        dropout: float,
        embedding_dropout: float = 0.0,
    ):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, embedding_size)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.cells = nn.ModuleList(
            nn.LSTMCell(embedding_size + memory_size if layer == 0 else hidden, hidden) for layer in range(layers)
        )
        if attention == "location":
            self.attention = LocationAwareAttention(hidden, memory_size, attention_size, location_channels, location_kernel)
        else:
            self.attention = ContentAttention(hidden, memory_size, attention_size, content_score)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Sequential(  # Chan et al.'s "CharacterDistribution" MLP over [state, context]
            nn.Linear(hidden + memory_size, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def initial_state(self, memory: torch.Tensor, memory_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, frames, size = memory.shape
        mask = valid_positions(memory_lengths.to(memory.device), frames)  # [B, S]
        state = {
            "memory": memory,
            "memory_mask": mask,
            "keys": self.attention.keys(memory),  # [B, S, A]
            "context": memory.new_zeros(batch, size),  # [B, D]
            # Uniform over the valid frames: the location features' starting point.
            "attention_weights": mask.to(memory.dtype) / mask.sum(1, keepdim=True).clamp(min=1),  # [B, S]
        }
        for layer, cell in enumerate(self.cells):
            state[f"hidden_{layer}"] = memory.new_zeros(batch, cell.hidden_size)
            state[f"cell_{layer}"] = memory.new_zeros(batch, cell.hidden_size)
        return state

    def step(
        self, previous_classes: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        new_state = dict(state)
        embedded = self.embedding_dropout(self.embedding(previous_classes))  # [N, E]
        inputs = torch.cat([embedded, state["context"]], dim=1)  # [N, E + D]
        for layer, cell in enumerate(self.cells):
            previous = (state[f"hidden_{layer}"], state[f"cell_{layer}"])
            hidden, memory_cell = cell(self.dropout(inputs) if layer > 0 else inputs, previous)
            new_state[f"hidden_{layer}"], new_state[f"cell_{layer}"] = hidden, memory_cell
            inputs = hidden  # [N, H]
        context, weights = self.attention(
            inputs, state["keys"], state["memory"], state["memory_mask"], state["attention_weights"]
        )  # [N, D], [N, S]
        new_state["context"], new_state["attention_weights"] = context, weights
        logits = self.output(torch.cat([inputs, context], dim=1))  # [N, C]
        return logits, new_state


@MODELS.register("listen_attend_spell")
class ListenAttendSpell(nn.Module):
    """The LAS model (see the module docstring); ``decoder`` is its :class:`Speller`."""

    def __init__(
        self,
        num_classes: PositiveInt,
        n_mels: PositiveInt = 40,
        listener_hidden: PositiveInt = 128,
        listener_layers: NonNegativeInt = 1,
        pyramid_layers: NonNegativeInt = 3,
        speller_hidden: PositiveInt = 256,
        speller_layers: PositiveInt = 1,
        embedding_size: PositiveInt = 64,
        attention: Literal["location", "content"] = "location",
        content_score: Literal["dot", "additive"] = "dot",
        attention_size: PositiveInt = 128,
        location_channels: PositiveInt = 10,
        location_kernel: OddInt = 15,
        ctc_head: bool = False,
        dropout: ProperFraction = 0.1,
        embedding_dropout: ProperFraction = 0.0,
    ):
        super().__init__()
        if listener_layers < 0 or pyramid_layers < 0 or listener_layers + pyramid_layers < 1:
            raise ValueError(
                f"model.listener_layers and model.pyramid_layers must be >= 0 with at least one layer in all, "
                f"got {listener_layers} and {pyramid_layers}"
            )
        if speller_layers < 1:
            raise ValueError(f"model.speller_layers must be >= 1, got {speller_layers}")
        self.listener = Listener(n_mels, listener_hidden, listener_layers, pyramid_layers, dropout)
        memory_size = 2 * listener_hidden
        self.decoder = Speller(
            num_classes,
            memory_size,
            embedding_size,
            speller_hidden,
            speller_layers,
            attention,
            content_score,
            attention_size,
            location_channels,
            location_kernel,
            dropout,
            embedding_dropout,
        )
        self.ctc_head = nn.Linear(memory_size, num_classes) if ctc_head else None

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """[B] input frames -> [B] memory frames (what ``ctc_head`` outputs)."""
        return self.listener.output_lengths(lengths)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.listener(features, lengths)  # [B, S, D], [B]

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor, previous_classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        memory, memory_lengths = self.encode(features, lengths)
        return teacher_forcing(self.decoder, memory, memory_lengths, previous_classes), memory, memory_lengths
