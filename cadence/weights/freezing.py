"""Frozen parameters by name pattern (RETURNN's ``trainable: False``, by glob).

Freezing sets ``requires_grad = False``: the parameter gets no gradient, so the optimizers
skip it (no update, no weight decay). Freeze before the optimizer is built, so that its
parameter groups can leave frozen parameters out. Buffers are not parameters: a frozen
batch norm still updates its running statistics in training mode.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from torch import nn

from cadence.errors import ConfigError
from cadence.weights.names import ParameterPattern, examples, matches

__all__ = ["FreezePatterns", "ParameterCounts", "count_parameters", "freeze_parameters"]

FreezePatterns = list[ParameterPattern]  # the recipe's ``freeze:`` section


@dataclasses.dataclass(frozen=True)
class ParameterCounts:
    """Numbers of scalars (not tensors) that train, and that are frozen."""

    trainable: int
    frozen: int

    def __str__(self) -> str:
        return f"{self.trainable:,} trainable parameters, {self.frozen:,} frozen"


def count_parameters(module: nn.Module) -> ParameterCounts:
    """Scalars in parameters that train and that do not (a shared parameter counts once).

    >>> count_parameters(nn.Linear(3, 2))
    ParameterCounts(trainable=8, frozen=0)
    """
    trainable = frozen = 0
    for parameter in module.parameters():
        if parameter.requires_grad:
            trainable += parameter.numel()
        else:
            frozen += parameter.numel()
    return ParameterCounts(trainable, frozen)


def freeze_parameters(module: nn.Module, patterns: Sequence[str]) -> ParameterCounts:
    """Freeze every parameter whose name matches one of ``patterns``; returns the counts after.

    >>> model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    >>> print(freeze_parameters(model, ["0.*"]))
    3 trainable parameters, 8 frozen
    """
    parameters = dict(module.named_parameters())
    chosen = []
    for index, pattern in enumerate(patterns):  # all checked before anything changes
        matched = [name for name in parameters if matches(pattern, name)]
        if not matched:
            raise ConfigError(f"freeze.{index}: '{pattern}' matches no parameter; names look like: {examples(pattern, parameters)}")
        chosen += matched
    for name in chosen:
        parameters[name].requires_grad_(False)
    return count_parameters(module)
