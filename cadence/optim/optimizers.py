"""Optimizer factories with small typed signatures (what a recipe may set).

Registered under their own names; called from Python, they record their arguments too
(``cadence.optim.adamw(task, lr=1e-3)``), so such a run can be rebuilt from its folder.
Bounds: a learning rate and ``eps`` are positive, weight decay is not negative, momentum and
betas lie in [0, 1).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from cadence.bounds import NonNegativeFloat, PositiveFloat, ProperFraction
from cadence.registry import OPTIMIZERS


def parameter_groups(model: nn.Module, weight_decay: float, decay_bias_and_norm: bool) -> list[dict]:
    """Split parameters so biases and normalization scales (1-D tensors) skip weight decay.

    Decaying them pulls normalization gains toward zero and rarely helps; the split is
    the common practice, and ``decay_bias_and_norm=True`` turns it off.
    """
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if decay_bias_and_norm or weight_decay == 0.0:
        return [{"params": trainable, "weight_decay": weight_decay}]
    decayed = [parameter for parameter in trainable if parameter.ndim > 1]
    undecayed = [parameter for parameter in trainable if parameter.ndim <= 1]
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": undecayed, "weight_decay": 0.0}]


@OPTIMIZERS.register("sgd")
def sgd(
    model: nn.Module, lr: PositiveFloat = 0.1, momentum: ProperFraction = 0.9, weight_decay: NonNegativeFloat = 0.0,
    nesterov: bool = False, decay_bias_and_norm: bool = False,
) -> torch.optim.SGD:
    groups = parameter_groups(model, weight_decay, decay_bias_and_norm)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


@OPTIMIZERS.register("adam")
def adam(
    model: nn.Module, lr: PositiveFloat = 1e-3, betas: tuple[ProperFraction, ProperFraction] = (0.9, 0.999),
    eps: PositiveFloat = 1e-8, weight_decay: NonNegativeFloat = 0.0, decay_bias_and_norm: bool = False,
) -> torch.optim.Adam:
    groups = parameter_groups(model, weight_decay, decay_bias_and_norm)
    return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps)


@OPTIMIZERS.register("adamw")
def adamw(
    model: nn.Module, lr: PositiveFloat = 1e-3, betas: tuple[ProperFraction, ProperFraction] = (0.9, 0.999),
    eps: PositiveFloat = 1e-8, weight_decay: NonNegativeFloat = 0.01, decay_bias_and_norm: bool = False,
) -> torch.optim.AdamW:
    groups = parameter_groups(model, weight_decay, decay_bias_and_norm)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)



def learning_rates(optimizer: torch.optim.Optimizer) -> Iterable[float]:
    return (group["lr"] for group in optimizer.param_groups)
