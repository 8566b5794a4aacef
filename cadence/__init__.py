"""cadence: a PyTorch training framework, speech first.

>>> from cadence import Trainer, ClassificationTask, Callback, EarlyStopping, Experiment

The names below are imported when first used (PEP 562), so that ``import cadence.trainer``
loads the loop and what it needs, not the config layer, the CLI or the audio stack.
"""

from __future__ import annotations

import importlib
from typing import Any

from cadence.version import __version__

# name -> the module that defines it
_EXPORTS = {
    "CadenceError": "cadence.errors",
    "CheckpointError": "cadence.errors",
    "ConfigError": "cadence.errors",
    "DataError": "cadence.errors",
    "TrainingInterrupted": "cadence.errors",
    "Callback": "cadence.callbacks",
    "EarlyStopping": "cadence.callbacks",
    "CheckpointPolicy": "cadence.checkpoint.retention",
    "Experiment": "cadence.experiment",
    "seed_everything": "cadence.checkpoint.rng",
    "TrainState": "cadence.state",
    "ClassificationTask": "cadence.tasks",
    "StepOutput": "cadence.tasks",
    "Task": "cadence.tasks",
    "Trainer": "cadence.trainer",
    "load": "cadence.config.rebuild",
    "trainer_from_checkpoint": "cadence.config.rebuild",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cadence' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once: later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
