"""Attention over an encoder memory, for decoders that run one step at a time.

Every attention here has the same two calls (from :class:`MemoryAttention`), so a decoder can hold any of them:

- ``keys(memory [B, S, D]) -> [B, S, A]``: the memory's projection, computed once per
  utterance (it goes into the decoder state, batch first like everything there);
- ``forward(query [N, Q], keys [N, S, A], memory [N, S, D], memory_mask [N, S] bool,
  previous_weights [N, S]) -> (context [N, D], weights [N, S])``.

Weights are exactly 0 beyond each memory length, and sum to 1 over the valid frames.

    >>> attention = ContentAttention(query_size=8, memory_size=6, attention_size=4)
    >>> memory, mask = torch.randn(2, 5, 6), valid_positions(torch.tensor([5, 3]), 5)
    >>> context, weights = attention(torch.randn(2, 8), attention.keys(memory), memory, mask, torch.zeros(2, 5))
    >>> context.shape, weights.shape, weights[1, 3:].tolist()
    (torch.Size([2, 6]), torch.Size([2, 5]), [0.0, 0.0])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from cadence.models.masking import valid_positions

__all__ = ["ContentAttention", "LocationAwareAttention", "MemoryAttention", "masked_softmax", "valid_positions"]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of ``scores [N, S]`` over the positions where ``mask [N, S]`` is True; 0 elsewhere."""
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


class MemoryAttention(nn.Module):
    """What every attention here shares: keys from ``memory_projection``, then a masked softmax of
    ``scores`` weighting the memory. A subclass creates ``memory_projection`` itself (so its layers
    are initialized in its own order) and defines ``scores``.
    """

    memory_projection: nn.Linear

    def keys(self, memory: torch.Tensor) -> torch.Tensor:  # [B, S, D] -> [B, S, A]
        return self.memory_projection(memory)

    def scores(self, query: torch.Tensor, keys: torch.Tensor, previous_weights: torch.Tensor) -> torch.Tensor:
        """query [N, Q], keys [N, S, A], previous_weights [N, S] -> unnormalized scores [N, S]."""
        raise NotImplementedError

    def forward(
        self,
        query: torch.Tensor,  # [N, Q]
        keys: torch.Tensor,  # [N, S, A]
        memory: torch.Tensor,  # [N, S, D]
        memory_mask: torch.Tensor,  # [N, S] bool, True on valid frames
        previous_weights: torch.Tensor,  # [N, S], 0 beyond each length
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weights = masked_softmax(self.scores(query, keys, previous_weights), memory_mask)  # [N, S]
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # [N, D]
        return context, weights


class ContentAttention(MemoryAttention):
    """Attention from content alone.

    - ``score="dot"``: ``<phi(query), psi(memory)> / sqrt(A)`` with linear projections phi, psi
      (Chan et al. 2016 use small MLPs; the 1/sqrt(A) scale keeps the softmax from saturating
      at initialization, as in Vaswani et al. 2017).
    - ``score="additive"``: ``w . tanh(W query + V memory + b)`` (Bahdanau et al. 2015).

    ``previous_weights`` is accepted and ignored, so every attention has the same signature.
    """

    def __init__(self, query_size: int, memory_size: int, attention_size: int, score: Literal["dot", "additive"] = "dot"):
        super().__init__()
        if score not in ("dot", "additive"):
            raise ValueError(f"score must be 'dot' or 'additive', got {score!r}")
        self.score = score
        self.query_projection = nn.Linear(query_size, attention_size, bias=score == "dot")
        self.memory_projection = nn.Linear(memory_size, attention_size)
        self.energy = nn.Linear(attention_size, 1, bias=False) if score == "additive" else None

    def scores(self, query: torch.Tensor, keys: torch.Tensor, previous_weights: torch.Tensor) -> torch.Tensor:
        projected = self.query_projection(query)  # [N, A]
        if self.energy is None:
            return torch.bmm(keys, projected.unsqueeze(2)).squeeze(2) / math.sqrt(keys.shape[-1])  # [N, S]
        return self.energy(torch.tanh(keys + projected.unsqueeze(1))).squeeze(2)  # [N, S]


class LocationAwareAttention(MemoryAttention):
    """Additive attention that also sees where it attended at the previous step (Chorowski et al. 2015).

    ``w . tanh(W query + V memory + U f + b)`` with location features ``f = conv(previous_weights)``:
    ``location_channels`` filters of width ``location_kernel`` over the previous weights, which
    makes moving forward along the memory easy to learn and discourages jumping back. The
    previous weights are 0 beyond each length, so padding never changes the features of valid frames.

    >>> attention = LocationAwareAttention(query_size=8, memory_size=6, attention_size=4)
    >>> memory, lengths = torch.randn(2, 5, 6), torch.tensor([5, 3])
    >>> mask = valid_positions(lengths, 5)
    >>> previous = mask / lengths[:, None]  # uniform over the valid frames
    >>> context, weights = attention(torch.randn(2, 8), attention.keys(memory), memory, mask, previous)
    >>> weights.sum(1).round(decimals=5).tolist(), weights[1, 3:].tolist()
    ([1.0, 1.0], [0.0, 0.0])
    """

    def __init__(
        self, query_size: int, memory_size: int, attention_size: int, location_channels: int = 10, location_kernel: int = 15
    ):
        super().__init__()
        if location_kernel % 2 == 0:
            raise ValueError(f"location_kernel must be odd (so features stay aligned with frames), got {location_kernel}")
        self.query_projection = nn.Linear(query_size, attention_size, bias=False)
        self.memory_projection = nn.Linear(memory_size, attention_size)
        self.location_convolution = nn.Conv1d(1, location_channels, location_kernel, padding=location_kernel // 2, bias=False)
        self.location_projection = nn.Linear(location_channels, attention_size, bias=False)
        self.energy = nn.Linear(attention_size, 1, bias=False)

    def scores(self, query: torch.Tensor, keys: torch.Tensor, previous_weights: torch.Tensor) -> torch.Tensor:
        location = self.location_convolution(previous_weights.unsqueeze(1))  # [N, channels, S]
        location = self.location_projection(location.transpose(1, 2))  # [N, S, A]
        hidden = torch.tanh(keys + location + self.query_projection(query).unsqueeze(1))  # [N, S, A]
        return self.energy(hidden).squeeze(2)  # [N, S]
