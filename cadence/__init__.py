"""cadence: a PyTorch training framework, speech first.

>>> from cadence import Trainer, ClassificationTask, Callback, EarlyStopping, Experiment
"""

from cadence.callbacks import Callback, EarlyStopping
from cadence.errors import CadenceError, CheckpointError, ConfigError, DataError
from cadence.experiment import Experiment
from cadence.rng import seed_everything
from cadence.state import TrainState
from cadence.tasks import ClassificationTask, StepOutput, Task
from cadence.trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "CadenceError", "Callback", "CheckpointError", "ClassificationTask", "ConfigError", "DataError",
    "EarlyStopping", "Experiment", "StepOutput", "Task", "TrainState", "Trainer", "seed_everything",
]
