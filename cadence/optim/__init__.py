"""Optimizers and learning-rate schedules, registered as ``OPTIMIZERS`` and ``SCHEDULERS``:
PyTorch's (``step``, ``exponential``, ``reduce_on_plateau``) and cadence's ``phases``
(warmup, decays, Newbob, plateau in sequence: :mod:`cadence.optim.control`), and
``per_module``: one optimizer and schedule per module (:mod:`cadence.optim.per_module`)."""

from cadence.optim.control import LearningRateSchedule, as_driver, phases
from cadence.optim.optimizers import adam, adamw, learning_rates, parameter_groups, sgd
from cadence.optim.per_module import OptimizerSet, ScheduleSet, per_module, per_module_schedules
from cadence.optim.schedulers import exponential, reduce_on_plateau, step

__all__ = [
    "LearningRateSchedule", "OptimizerSet", "ScheduleSet", "adam", "adamw", "as_driver", "exponential", "learning_rates",
    "parameter_groups", "per_module", "per_module_schedules", "phases", "reduce_on_plateau", "sgd", "step",
]
