"""Optimizers and learning-rate schedules, registered as ``OPTIMIZERS`` and ``SCHEDULERS``:
PyTorch's (``step``, ``exponential``, ``reduce_on_plateau``) and cadence's ``phases``
(warmup, decays, Newbob, plateau in sequence: :mod:`cadence.optim.control`)."""

from cadence.optim.control import LearningRateSchedule, as_driver, phases
from cadence.optim.optimizers import adam, adamw, learning_rates, parameter_groups, sgd
from cadence.optim.schedulers import exponential, reduce_on_plateau, step

__all__ = [
    "LearningRateSchedule", "adam", "adamw", "as_driver", "exponential", "learning_rates", "parameter_groups", "phases",
    "reduce_on_plateau", "sgd", "step",
]
