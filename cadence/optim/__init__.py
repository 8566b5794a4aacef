"""Optimizers and learning-rate schedules."""

from cadence.optim.optimizers import OPTIMIZER_FACTORIES, adam, adamw, learning_rates, parameter_groups, sgd
from cadence.optim.schedulers import SCHEDULER_FACTORIES, exponential, is_plateau_scheduler, reduce_on_plateau, step

__all__ = [
    "OPTIMIZER_FACTORIES", "SCHEDULER_FACTORIES", "adam", "adamw", "exponential", "is_plateau_scheduler",
    "learning_rates", "parameter_groups", "reduce_on_plateau", "sgd", "step",
]
