"""cadence: a PyTorch training framework, speech first.

>>> from cadence import Trainer, ClassificationTask, Callback, EarlyStopping, Experiment
"""

from cadence.callbacks import Callback, EarlyStopping
from cadence.checkpointing import CheckpointPolicy, TrainingInterrupted
from cadence.errors import CadenceError, CheckpointError, ConfigError, DataError
from cadence.experiment import Experiment
from cadence.rng import seed_everything
from cadence.state import TrainState
from cadence.tasks import ClassificationTask, StepOutput, Task
from cadence.trainer import Trainer
from cadence.serialization import load

__version__ = "0.1.0"

__all__ = [
    "CadenceError", "Callback", "CheckpointError", "CheckpointPolicy", "ClassificationTask", "ConfigError", "DataError",
    "EarlyStopping", "Experiment", "StepOutput", "Task", "TrainState", "Trainer", "TrainingInterrupted", "load",
    "seed_everything",
]
