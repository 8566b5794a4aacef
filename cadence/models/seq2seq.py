"""What every attention (encoder-decoder) speech model offers to tasks and decoders.

An attention model (LAS, TDS) encodes features once into a memory, then its decoder emits one
class per step. Training drives the decoder step by step (teacher forcing, scheduled sampling)
and beam search reorders and expands hypotheses between steps. Both only need the contracts
below, so any model that keeps them works with every task and decoder.

Class 0 is both <sos> (the first previous class) and <eos> (end of hypothesis); token id t is
class t + 1.

A decoder state is a flat ``dict[str, Tensor]`` with the batch (or hypothesis) on dim 0 of every
tensor, the memory and its mask included, so reordering hypotheses is one ``index_select`` per
entry (:func:`select_state`):

    >>> state = {"hidden": torch.tensor([[1.0], [2.0]]), "memory_mask": torch.tensor([[True], [False]])}
    >>> select_state(state, torch.tensor([1, 1, 0]))["hidden"].flatten().tolist()
    [2.0, 2.0, 1.0]
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["AttentionDecoder", "AttentionModel", "select_state", "teacher_forcing"]


@runtime_checkable
class AttentionDecoder(Protocol):
    """One output step at a time, from a state that holds everything the next step needs."""

    def initial_state(self, memory: torch.Tensor, memory_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """memory [B, S, D], memory_lengths [B] -> the state before the first step (every tensor [B, ...])."""
        ...

    def step(
        self, previous_classes: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """previous_classes [N] int64 (0 = <sos> at the first step) -> (logits [N, C], new state).

        Never changes ``state`` in place: beam search may still hold it.
        """
        ...


@runtime_checkable
class AttentionModel(Protocol):
    """An encoder-decoder model: ``encode`` once, then step its ``decoder``; ``ctc_head`` may be None."""

    decoder: AttentionDecoder
    ctc_head: nn.Linear | None

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [B, F, T], lengths [B] -> (memory [B, S, D], memory_lengths [B])."""
        ...

    def __call__(
        self, features: torch.Tensor, lengths: torch.Tensor, previous_classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forcing: previous_classes [B, U] -> (logits [B, U, C], memory, memory_lengths)."""
        ...


def select_state(state: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reorder, repeat or drop the batch entries of a decoder state: ``index [N]`` into dim 0."""
    return {name: value.index_select(0, index) for name, value in state.items()}


def teacher_forcing(
    decoder: AttentionDecoder, memory: torch.Tensor, memory_lengths: torch.Tensor, previous_classes: torch.Tensor
) -> torch.Tensor:
    """Step ``decoder`` over the given previous classes [B, U] -> logits [B, U, C].

    One step per output position: decoders with input feeding (LAS) cannot run the steps in
    parallel, and one loop for every decoder keeps training and beam search on the same code.
    """
    state = decoder.initial_state(memory, memory_lengths)
    logits = []
    for position in range(previous_classes.shape[1]):
        step_logits, state = decoder.step(previous_classes[:, position], state)  # [B, C]
        logits.append(step_logits)
    return torch.stack(logits, dim=1)  # [B, U, C]
