"""LR scheduler factories (step, exponential, reduce-on-plateau) with typed signatures.

Whether a schedule is stepped per epoch or per optimizer step is the recipe's
``scheduler.interval``; reduce-on-plateau is always stepped after validation with the
value of its ``monitor`` (the trainer's monitor by default).

Bounds: ``gamma`` is positive (a negative one would flip the learning rate's sign; above 1
is unusual but legal), a plateau's ``factor`` lies in (0, 1).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Gt, Lt
from torch.optim import lr_scheduler

from cadence.bounds import NOT_BOOLEAN, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from cadence.registry import SCHEDULERS


@SCHEDULERS.register("step")
def step(optimizer: torch.optim.Optimizer, step_size: PositiveInt, gamma: PositiveFloat = 0.1) -> lr_scheduler.StepLR:
    return lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


@SCHEDULERS.register("exponential")
def exponential(optimizer: torch.optim.Optimizer, gamma: PositiveFloat) -> lr_scheduler.ExponentialLR:
    return lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


@SCHEDULERS.register("reduce_on_plateau")
def reduce_on_plateau(
    optimizer: torch.optim.Optimizer, mode: Literal["min", "max"] = "min",
    factor: Annotated[float, Gt(0), Lt(1), NOT_BOOLEAN] = 0.5, patience: NonNegativeInt = 2,
    threshold: NonNegativeFloat = 1e-4, min_lr: NonNegativeFloat = 0.0,
) -> lr_scheduler.ReduceLROnPlateau:
    return lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold, min_lr=min_lr
    )
