"""Losses over padded sequences, and named losses combined with weights.

Every function takes padded tensors plus lengths and ignores what lies beyond a length,
so a loss does not depend on how utterances were grouped into batches.

- :func:`ctc_loss`: connectionist temporal classification, blank = class 0, with a choice of
  normalization; utterances whose target cannot fit their frames are left out (see
  :func:`ctc_feasible`) instead of turning the batch's loss into infinity or zero.
- :func:`sequence_cross_entropy`: per-token cross-entropy with label smoothing.
- :func:`masked_mse`: mean squared error over valid frames (regression targets).
- :class:`LossTerm` and :func:`combine_losses`: several named losses in one task, each
  with a weight, some only reported in evaluation.
- :func:`l2_penalty`: the sum of squared weights, an explicit regularizer that (unlike
  AdamW's decoupled weight decay) is part of the loss.

>>> ctc_feasible(torch.tensor([[1, 1]]), torch.tensor([2]), torch.tensor([2]))
tensor([False])
>>> terms = {"ctc": LossTerm(weight=0.3), "attention": LossTerm(weight=0.7)}
>>> combine_losses({"ctc": torch.tensor(2.0), "attention": torch.tensor(1.0)}, terms)
tensor(1.3000)
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch
from torch import nn
from torch.nn import functional as F

from cadence.bounds import NonNegativeFloat
from cadence.errors import ConfigError

CTCNormalization = Literal["target_length", "batch", "tokens"]


@pydantic.dataclasses.dataclass(config=pydantic.ConfigDict(extra="forbid", allow_inf_nan=False))
class LossTerm:
    """How one named loss counts: ``weight`` in the training loss; ``evaluation_only`` losses
    are computed and reported in validation and test but never back-propagated."""

    weight: NonNegativeFloat = 1.0
    evaluation_only: bool = False


def check_loss_terms(terms: dict[str, LossTerm], available: set[str], owner: str) -> dict[str, LossTerm]:
    """Refuse names the task cannot compute and a training loss with nothing in it."""
    unknown = sorted(set(terms) - available)
    if unknown:
        raise ConfigError(f"{owner}.losses: unknown loss {unknown}; this task computes {sorted(available)}")
    if not any(term.weight > 0 and not term.evaluation_only for term in terms.values()):
        raise ConfigError(f"{owner}.losses: no loss is trained; give at least one a weight > 0 without evaluation_only")
    return terms


def combine_losses(parts: dict[str, torch.Tensor], terms: dict[str, LossTerm]) -> torch.Tensor:
    """The weighted sum of the trained ``parts`` (in evaluation too, so val/loss tracks what is trained)."""
    total = None
    for name, term in terms.items():
        if term.evaluation_only or term.weight == 0:
            continue
        weighted = term.weight * parts[name]
        total = weighted if total is None else total + weighted
    if total is None:
        raise ValueError("no trained loss among the terms")
    return total


def ctc_minimum_frames(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """[B] the fewest frames a CTC path needs: one per token, plus a blank between repeats."""
    positions = torch.arange(targets.shape[1], device=targets.device)
    valid = positions[None, 1:] < target_lengths[:, None]
    repeats = ((targets[:, 1:] == targets[:, :-1]) & valid).sum(1)
    return target_lengths + repeats


def ctc_feasible(targets: torch.Tensor, target_lengths: torch.Tensor, output_lengths: torch.Tensor) -> torch.Tensor:
    """[B] bool: can the output frames hold the target at all? (If not, CTC's loss is infinite.)"""
    return ctc_minimum_frames(targets, target_lengths) <= output_lengths


def ctc_loss(
    log_probs: torch.Tensor,
    output_lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    *,
    normalize: CTCNormalization = "target_length",
    zero_infinity: bool = True,
) -> torch.Tensor:
    """CTC loss with blank = class 0; ``targets`` are model classes (token id + 1).

    ``log_probs`` [B, T, C]; ``targets`` [B, U] (padded). ``normalize``: ``target_length``
    averages each utterance's loss divided by its target length (torch's ``"mean"``),
    ``batch`` averages per-utterance sums, ``tokens`` divides the batch sum by all tokens.
    ``zero_infinity`` zeroes the loss (and gradient) of an utterance with no valid path.
    """
    per_utterance = F.ctc_loss(
        log_probs.float().transpose(0, 1), targets, output_lengths, target_lengths,  # float32 under mixed precision
        blank=0, reduction="none", zero_infinity=zero_infinity,
    )  # [B]
    if normalize == "target_length":
        return (per_utterance / target_lengths.clamp(min=1).to(per_utterance.dtype)).mean()
    if normalize == "batch":
        return per_utterance.mean()
    if normalize == "tokens":
        return per_utterance.sum() / target_lengths.sum().clamp(min=1)
    raise ValueError(f"normalize must be one of target_length, batch, tokens; got {normalize!r}")


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """[B] lengths -> [B, size] bool, True on valid positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def sequence_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy over the valid tokens of a batch: ``logits`` [B, U, C], ``targets`` [B, U]."""
    mask = length_mask(lengths, targets.shape[1])
    per_token = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), label_smoothing=label_smoothing, reduction="none"
    ).view_as(targets)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def masked_mean(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [B, ..., T]`` over the valid frames (``t < lengths[b]``) of every channel."""
    mask = length_mask(lengths, values.shape[-1]).view(values.shape[0], *([1] * (values.dim() - 2)), -1)
    values_per_frame = values[0, ..., 0].numel()
    return (values * mask).sum() / (mask.sum() * values_per_frame).clamp(min=1)


def masked_mse(predictions: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean squared error over valid frames: ``predictions`` and ``targets`` [B, ..., T], lengths [B]."""
    return masked_mean((predictions - targets) ** 2, lengths)


def l2_penalty(module: nn.Module) -> torch.Tensor:
    """Sum of squared weights of every parameter with more than one dimension (biases and
    normalization gains are left free, as is usual)."""
    squares = [parameter.pow(2).sum() for parameter in module.parameters() if parameter.requires_grad and parameter.dim() > 1]
    return torch.stack(squares).sum() if squares else torch.zeros(())
