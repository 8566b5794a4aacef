"""When the Trainer saves, which checkpoints it keeps, and how a run is asked to stop.

- :class:`CheckpointPolicy` (a recipe's ``checkpoint:`` section): save every N epochs, every
  N steps and/or every N minutes; keep the ``keep_last`` newest and the ``keep_best`` best
  by the monitored value; the best one (``TrainState.best_checkpoint``) is never deleted.
- :func:`checkpoints_to_delete`: the retention rule, a pure function of the folder's listing.
- :class:`StopRequests`: SIGTERM / SIGINT while ``fit`` runs ask for a clean stop (the
  Trainer saves a checkpoint at the next batch boundary and raises
  :class:`TrainingInterrupted`); a second SIGINT interrupts at once.

Example:

    >>> policy = CheckpointPolicy(every_steps=100, keep_last=2, keep_best=1)
    >>> policy.is_due_after_step(global_step=200, seconds_since_save=5.0), policy.is_due_after_epoch(3)
    (True, True)
    >>> listing = [("step-1", 1, 0.9), ("step-2", 2, 0.5), ("step-3", 3, 0.7), ("step-4", 4, None)]
    >>> checkpoints_to_delete(listing, policy, mode="min", protected={"step-4"})
    ['step-1']
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from cadence.checkpoint import MANIFEST_FILE, Checkpointer, verify_checkpoint
from cadence.errors import CheckpointError, TrainingInterrupted

__all__ = [
    "CheckpointPolicy", "StopRequests", "TrainingInterrupted", "checkpoints_to_delete", "find_best_checkpoint", "find_checkpoint", "listing",
]

logger = logging.getLogger("cadence")


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    """When to save and what to keep (``None`` switches a trigger off)."""

    every_epochs: int | None = 1
    every_steps: int | None = None
    every_minutes: float | None = None
    keep_last: int = 1
    keep_best: int = 1

    def __post_init__(self) -> None:
        for name in ("every_epochs", "every_steps", "every_minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"checkpoint.{name} must be positive or null, got {value}")
        if self.keep_last < 1 or self.keep_best < 0:
            raise ValueError(f"checkpoint.keep_last must be >= 1 and keep_best >= 0, got {self.keep_last}, {self.keep_best}")

    def is_due_after_step(self, global_step: int, seconds_since_save: float) -> bool:
        by_steps = self.every_steps is not None and global_step % self.every_steps == 0
        by_time = self.every_minutes is not None and seconds_since_save >= 60.0 * self.every_minutes
        return by_steps or by_time

    def is_due_after_epoch(self, epochs_completed: int) -> bool:
        return self.every_epochs is not None and epochs_completed % self.every_epochs == 0


def checkpoints_to_delete(
    entries: list[tuple[str, int, float | None]], policy: CheckpointPolicy, mode: str, protected: set[str]
) -> list[str]:
    """Names to delete from ``entries`` = ``(name, global_step, monitored value or None)``, oldest first.

    Kept: the ``keep_last`` newest, the ``keep_best`` best by value (``mode`` "min" or "max";
    checkpoints saved without a validation have no value), and every ``protected`` name.
    """
    newest = {name for name, _, _ in sorted(entries, key=lambda entry: entry[1])[-policy.keep_last :]}
    valued = [(value, step, name) for name, step, value in entries if value is not None and not math.isnan(value)]
    valued.sort(key=lambda item: (item[0] if mode == "min" else -item[0], -item[1]))
    best = {name for _, _, name in valued[: policy.keep_best]}
    keep = newest | best | protected
    return [name for name, _, _ in sorted(entries, key=lambda entry: entry[1]) if name not in keep]


def listing(checkpointer: Checkpointer) -> list[tuple[str, int, float | None]]:
    """``(name, global_step, monitored value)`` of each checkpoint, read from the manifests
    without hashing the files (retention runs after every save)."""
    entries = []
    for path in checkpointer.list():
        try:
            metadata = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))["metadata"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # damaged: left alone, and skipped when resuming
        value = metadata.get("monitor_value")
        step = metadata.get("global_step")
        entries.append((path.name, step if type(step) is int else -1, float(value) if isinstance(value, (int, float)) else None))
    return entries


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the newest valid one in an experiment or ``checkpoints/`` folder.

    A damaged newest checkpoint is skipped with a warning naming it; when none is valid,
    a :class:`CheckpointError` says so (a run never silently starts from scratch).
    """
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not folder.is_dir():
        raise CheckpointError(f"{path}: no checkpoint or experiment folder here; give an experiment folder or a checkpoint folder")
    found = Checkpointer(folder).latest()
    if found is None:
        raise CheckpointError(
            f"{folder}: no valid checkpoint to resume from (none, or every one is damaged; see the warnings above). "
            "Start a new run, or restore a checkpoint from a backup"
        )
    return found


def find_best_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or an experiment's valid checkpoint with the best monitored value.

    What a trained model is used for (``cadence eval``, ``transcribe``, :func:`cadence.load`) is
    the model the run kept as best and tested, not whatever epoch came last. Without any
    monitored value (no validation), the newest valid checkpoint.
    """
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return path
    newest = find_checkpoint(path)
    checkpointer = Checkpointer(newest.parent)
    mode = json.loads((newest / MANIFEST_FILE).read_text(encoding="utf-8"))["metadata"].get("mode", "min")
    # Ties go to the earliest, as in the Trainer, which takes a new best only when strictly better.
    scored = sorted(
        (value if mode == "min" else -value, step, name)
        for name, step, value in listing(checkpointer) if value is not None and math.isfinite(value)
    )
    for _, _, name in scored:
        candidate = newest.parent / name
        try:
            verify_checkpoint(candidate)
        except CheckpointError as error:
            logger.warning("skipping damaged checkpoint %s: %s", candidate, error)
            continue
        return candidate
    return newest


class StopRequests:
    """Turns SIGTERM and SIGINT into a stop request while :meth:`watching` (main thread only)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def reset(self) -> None:
        self.signal_number = None

    def _handle(self, signal_number: int, frame) -> None:
        if self.requested and signal_number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.signal_number = signal_number
        logger.warning(
            "%s received: saving a checkpoint at the end of this step, then stopping (Ctrl-C again to stop at once)",
            signal.Signals(signal_number).name,
        )

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return
        previous = {number: signal.signal(number, self._handle) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
