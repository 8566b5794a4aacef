"""LR scheduler factories (step, exponential, reduce-on-plateau) with typed signatures.

Whether a schedule is stepped per epoch or per optimizer step is the recipe's
``scheduler.interval``; reduce-on-plateau is always stepped after validation with the
value of its ``monitor`` (the trainer's monitor by default).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.optim import lr_scheduler

from cadence.registry import SCHEDULERS


@SCHEDULERS.register("step")
def step(optimizer: torch.optim.Optimizer, step_size: int, gamma: float = 0.1) -> lr_scheduler.StepLR:
    return lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


@SCHEDULERS.register("exponential")
def exponential(optimizer: torch.optim.Optimizer, gamma: float) -> lr_scheduler.ExponentialLR:
    return lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


@SCHEDULERS.register("reduce_on_plateau")
def reduce_on_plateau(
    optimizer: torch.optim.Optimizer, mode: Literal["min", "max"] = "min", factor: float = 0.5,
    patience: int = 2, threshold: float = 1e-4, min_lr: float = 0.0,
) -> lr_scheduler.ReduceLROnPlateau:
    return lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold, min_lr=min_lr
    )


def is_plateau_scheduler(scheduler: object) -> bool:
    return isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)

