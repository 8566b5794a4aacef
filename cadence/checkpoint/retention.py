"""When the Trainer saves a checkpoint and which checkpoints it keeps.

- :class:`CheckpointPolicy` (a recipe's ``checkpoint:`` section): save every N epochs, every
  N steps and/or every N minutes; keep the ``keep_last`` newest and the ``keep_best`` best
  by the monitored value; the best one (``TrainState.best_checkpoint``) is never deleted.
- :func:`checkpoints_to_delete`: the retention rule, a pure function of the folder's listing.

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

__all__ = ["CheckpointPolicy", "checkpoints_to_delete"]


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
