"""User-facing errors.

Every mistake a user can make (a wrong config key, a missing file, a damaged
checkpoint) raises a subclass of :class:`CadenceError`. The CLI prints such an
error as one line and exits with code 2; anything else is a bug in cadence and
keeps its traceback.
"""

from __future__ import annotations


class CadenceError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""


class ConfigError(CadenceError):
    """A recipe or override is malformed: unknown key, wrong type, bad YAML."""


class DataError(CadenceError):
    """A data folder, manifest or audio file is missing or unreadable."""


class CheckpointError(CadenceError):
    """A checkpoint is missing, damaged, or not in cadence's format."""


class NonFiniteLoss(CadenceError):
    """A training loss was NaN or infinite (a learning rate too high, bad data): the run stops
    rather than train on, and save, broken weights."""


class StorageError(CadenceError):
    """Writing to disk failed: no space left, a quota or file size limit, a read-only folder,
    no permission. Names the path and the cause; what was written before is kept (files are
    replaced atomically, checkpoints by rename)."""

    def __init__(self, path, cause: str, errno: int | None = None,
                 fix: str = "free some space or choose a writable folder (what was written before is kept)"):
        super().__init__(f"cannot write {path}: {cause}; {fix}")
        self.path, self.cause, self.errno = path, cause, errno


class TrainingInterrupted(CadenceError):
    """``fit`` stopped on request (a signal or ``Experiment.stop()``) after saving a checkpoint."""

    def __init__(self, message: str, signal_number: int | None = None, checkpoint=None):
        super().__init__(message)
        self.signal_number = signal_number
        self.checkpoint = checkpoint
