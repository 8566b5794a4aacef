"""When the Trainer saves a checkpoint, which checkpoints it keeps, and which one is best.

- :class:`CheckpointPolicy` (a recipe's ``checkpoint:`` section): save every N epochs, every
  N steps and/or every N minutes; keep the ``keep_last`` newest and the ``keep_best`` best
  by the monitored value; the best one (``TrainState.best_checkpoint``) is never deleted.
- :class:`SaveTriggers`: the one place that decides whether the Trainer saves now, at each
  boundary of the loop (after a step, after an epoch, at the end of fit).
- :func:`checkpoints_to_delete`: the retention rule, a pure function of the folder's listing.
- :func:`is_better` and :func:`best_first`: what "better" means for a monitored value, for
  the Trainer's best model, retention and :func:`~cadence.checkpoint.find_best_checkpoint` alike.

Example:

    >>> policy = CheckpointPolicy(every_steps=100, keep_last=2, keep_best=1)
    >>> policy.is_due_after_step(global_step=200, seconds_since_save=5.0), policy.is_due_after_epoch(3)
    (True, True)
    >>> listing = [("step-1", 1, 0.9), ("step-2", 2, 0.5), ("step-3", 3, 0.7), ("step-4", 4, None)]
    >>> checkpoints_to_delete(listing, policy, mode="min", protected={"step-4"})
    ['step-1']
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from typing import Literal, NamedTuple

from cadence.bounds import NonNegativeInt, PositiveFloat, PositiveInt

__all__ = ["CheckpointEntry", "CheckpointPolicy", "SaveTriggers", "best_first", "checkpoints_to_delete", "is_better"]

Boundary = Literal["step", "epoch", "final"]


class CheckpointEntry(NamedTuple):
    """One checkpoint of a folder as retention sees it (read from its manifest)."""

    name: str
    global_step: int  # -1 when the manifest does not say
    monitor_value: float | None  # None for a checkpoint saved without a validation


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    """When to save and what to keep (``None`` switches a trigger off)."""

    every_epochs: PositiveInt | None = 1
    every_steps: PositiveInt | None = None
    every_minutes: PositiveFloat | None = None
    keep_last: PositiveInt = 1
    keep_best: NonNegativeInt = 1

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


class SaveTriggers:
    """Decides, at each boundary of the loop, whether the Trainer saves a checkpoint now.

    The rules: after a step, every ``every_steps`` steps or ``every_minutes`` minutes; a step
    save that falls due on the epoch's last batch waits for the epoch's end (after its
    validation), so that the checkpoint holds the finished epoch. After an epoch, every
    ``every_epochs`` epochs, on a new best, or when a step save is waiting. At the end of
    fit, unless the last save was of this very position. The Trainer reports each save
    with :meth:`saved`.

    >>> triggers = SaveTriggers(CheckpointPolicy(every_epochs=None, every_steps=2))
    >>> triggers.should_save("step", global_step=2, last_batch=True)  # waits for the epoch's end
    False
    >>> triggers.should_save("epoch", epochs_completed=1, improved=False)
    True
    """

    def __init__(self, policy: CheckpointPolicy):
        self.policy = policy
        self.last_saved_at = time.monotonic()
        self.last_saved_position: tuple[int, int] | None = None  # (epoch, global_step)
        self.waiting_for_epoch_end = False

    def should_save(
        self, boundary: Boundary, *, global_step: int = 0, last_batch: bool = False, epochs_completed: int = 0,
        improved: bool = False, position: tuple[int, int] | None = None,
    ) -> bool:
        if boundary == "step":
            due = self.policy.is_due_after_step(global_step, time.monotonic() - self.last_saved_at)
            if due and last_batch:
                self.waiting_for_epoch_end = True
                return False
            return due
        if boundary == "epoch":
            return self.policy.is_due_after_epoch(epochs_completed) or improved or self.waiting_for_epoch_end
        return position != self.last_saved_position

    def saved(self, position: tuple[int, int]) -> None:
        """A checkpoint of ``position`` = ``(epoch, global_step)`` was just written (or resumed from)."""
        self.last_saved_at = time.monotonic()
        self.last_saved_position = position
        self.waiting_for_epoch_end = False


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` strictly improves on ``best`` under ``mode`` ("min" or "max"); NaN never does."""
    if math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def best_first(entries: Iterable[CheckpointEntry], mode: str) -> list[CheckpointEntry]:
    """Entries with a finite monitored value, best first; ties go to the earliest, as the
    Trainer takes a new best only when it is strictly better."""
    valued = [entry for entry in entries if entry.monitor_value is not None and math.isfinite(entry.monitor_value)]
    return sorted(valued, key=lambda entry: (entry.monitor_value if mode == "min" else -entry.monitor_value, entry.global_step))


def checkpoints_to_delete(
    entries: list[CheckpointEntry], policy: CheckpointPolicy, mode: str, protected: set[str]
) -> list[str]:
    """Names to delete from ``entries`` (``(name, global_step, monitored value or None)``), oldest first.

    Kept: the ``keep_last`` newest, the ``keep_best`` best by value (``mode`` "min" or "max";
    checkpoints saved without a validation have no value), and every ``protected`` name.
    """
    entries = [CheckpointEntry(*entry) for entry in entries]
    oldest_first = sorted(entries, key=lambda entry: entry.global_step)
    newest = {entry.name for entry in oldest_first[-policy.keep_last:]}
    best = {entry.name for entry in best_first(entries, mode)[: policy.keep_best]}
    keep = newest | best | protected
    return [entry.name for entry in oldest_first if entry.name not in keep]
