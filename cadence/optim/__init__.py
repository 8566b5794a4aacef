"""Optimizers and learning-rate schedules, registered as ``OPTIMIZERS`` and ``SCHEDULERS``."""

from cadence.optim.optimizers import adam, adamw, learning_rates, parameter_groups, sgd
from cadence.optim.schedulers import exponential, is_plateau_scheduler, reduce_on_plateau, step

__all__ = [
    "adam", "adamw", "exponential", "is_plateau_scheduler", "learning_rates", "parameter_groups", "reduce_on_plateau", "sgd",
    "step",
]
