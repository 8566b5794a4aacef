"""When the Trainer saves a checkpoint, which checkpoints it keeps, and which one is best.

- :class:`CheckpointPolicy` (a recipe's ``checkpoint:`` section): save every N epochs, every
  N steps and/or every N minutes; keep the ``keep_last`` newest and the ``keep_best`` best
  by the monitored value; the best one (``TrainState.best_checkpoint``) is never deleted.
- :class:`SaveTriggers`: the one place that decides whether the Trainer saves now, at each
  boundary of the loop (after a step, after an epoch, at the end of fit).
- :func:`checkpoints_to_delete`: the retention rule, a pure function of the folder's listing.
- :func:`is_better`, :func:`improves` and :func:`best_first`: what "better" means for a
  monitored value and its tie-breakers (``monitor: [val/wer, val/loss]``: the loss decides
  between validations of equal WER), for the Trainer's best model, retention and
  :func:`~cadence.checkpoint.find_best_checkpoint` alike.

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
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

from cadence.bounds import NonNegativeInt, PositiveFloat, PositiveInt

__all__ = [
    "CheckpointEntry", "CheckpointPolicy", "SaveTriggers", "best_first", "checkpoints_to_delete", "improves", "is_better",
    "ranked_monitors", "tie_rank",
]

Boundary = Literal["step", "epoch", "final"]


class CheckpointEntry(NamedTuple):
    """One checkpoint of a folder as retention sees it (read from its manifest)."""

    name: str
    global_step: int  # -1 when the manifest does not say
    monitor_value: float | None  # None for a checkpoint saved without a validation
    # The tie-breakers' values (``monitor: [val/wer, val/loss]``), each turned so that lower is
    # better (a "max" value negated); NaN or missing ranks last.
    tie_ranks: tuple[float, ...] = ()


def ranked_monitors(monitor: str | Sequence[str], mode: str | Sequence[str]) -> list[tuple[str, str]]:
    """``(key, mode)`` of the monitored value, then of each tie-breaker: ``monitor`` is a key or a
    list of keys (a later one decides when the earlier ones are equal); ``mode`` one mode for all,
    or one per key.

    >>> ranked_monitors(["val/wer", "val/loss"], "min")
    [('val/wer', 'min'), ('val/loss', 'min')]
    >>> ranked_monitors(["val/accuracy", "val/loss"], ["max", "min"])
    [('val/accuracy', 'max'), ('val/loss', 'min')]
    """
    keys = [monitor] if isinstance(monitor, str) else list(monitor)
    modes = [mode] * len(keys) if isinstance(mode, str) else list(mode)
    if not keys or not all(isinstance(key, str) and key for key in keys):
        raise ValueError(f"monitor must be a validation key or a non-empty list of them, got {monitor!r}")
    if len(modes) != len(keys):
        raise ValueError(f"mode lists {len(modes)} modes for the {len(keys)} monitored keys {keys}: give one mode, or one per key")
    if any(each not in ("min", "max") for each in modes):
        raise ValueError(f"mode must be 'min' or 'max' (or a list of them), got {mode!r}")
    return list(zip(keys, modes))


def improves(values: Sequence[float], best: Sequence[float | None] | None, modes: Sequence[str]) -> bool:
    """Whether ``values`` (the monitored value, then the tie-breakers') improve on ``best``: the
    first value that is strictly better or worse decides; equal on all is no improvement.

    >>> improves([0.0, 0.3], [0.0, 0.5], ["min", "min"]), improves([0.0, 0.7], [0.0, 0.5], ["min", "min"])
    (True, False)
    """
    best = list(best) if best is not None else [None] * len(values)
    for value, old, mode in zip(values, best, modes):
        if is_better(value, old, mode):
            return True
        if not value == old:  # worse, or NaN
            return False
    return False


def tie_rank(value: Any, mode: str) -> float:
    """A tie-breaker's value turned so that lower is better; NaN or not a number ranks last."""
    if type(value) not in (int, float) or math.isnan(value):
        return math.inf
    return float(value) if mode == "min" else -float(value)


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

    The rules: after a step, every ``every_steps`` steps or ``every_minutes`` minutes, or on a
    new best found by a validation inside the epoch; a step save that falls due on the epoch's
    last batch waits for the epoch's end (after its validation), so that the checkpoint holds
    the finished epoch. After an epoch, every
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
        if boundary == "step":  # improved: a validation inside the epoch (validate_every_steps) found a new best
            due = self.policy.is_due_after_step(global_step, time.monotonic() - self.last_saved_at) or improved
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
    return sorted(valued, key=lambda entry: (entry.monitor_value if mode == "min" else -entry.monitor_value,
                                             *entry.tie_ranks, entry.global_step))


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
