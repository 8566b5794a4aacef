"""TrainState: where training is, and nothing else.

The position inside the running epoch is not here: the train loader owns it (see
:mod:`cadence.resumable`), so that it is kept in one place.

Everything here is plain data (ints, floats, strings, lists of dicts), so it is saved in
a checkpoint's JSON as is and restored exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class TrainState:
    epoch: int = 0  # epochs completed; the running epoch's index while inside one
    global_step: int = 0  # optimizer steps taken since the start of training
    best_value: float | None = None  # best value of the trainer's monitored metric
    best_epoch: int | None = None  # 1-based epoch number of the best validation
    best_step: int | None = None  # global_step of the best validation (inside its epoch: validate_every_steps)
    best_checkpoint: str | None = None  # checkpoint folder name holding the best weights
    should_stop: bool = False  # set by anyone (callbacks, max_steps) to end fit cleanly
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one entry per validation
    skipped_batches: int = 0  # updates dropped for a NaN or infinite loss or gradient (on_nonfinite: skip)
    consecutive_skips: int = 0  # of those, the ones since the last update taken

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def best_entry(self) -> dict[str, Any]:
        """The history's entry of the best validation (empty before one). Found by its step; a
        checkpoint from before ``best_step`` was kept validated once an epoch, so by its epoch."""
        if self.best_step is not None:
            return next((entry for entry in reversed(self.history) if entry.get("step") == self.best_step), {})
        return next((entry for entry in reversed(self.history) if entry.get("epoch") == self.best_epoch), {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back a saved state; a field of the wrong type (a damaged or crafted checkpoint) is a
        ``TypeError`` naming it, before anything changes."""
        for name, value in state.items():
            check = _FIELD_CHECKS.get(name)
            if check is not None and not check[0](value):
                raise TypeError(f"trainer_state.{name} is {value!r}, not {check[1]}")
        for field in dataclasses.fields(self):
            if field.name in state:
                setattr(self, field.name, state[field.name])


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _optional(check: Any) -> Any:
    return lambda value: value is None or check(value)


def _checkpoint_name(value: Any) -> bool:  # a folder name beside the others, never a path
    return type(value) is str and "/" not in value and not value.startswith(".")


# What each saved field may hold, and how to say it (JSON gives ints where floats were saved).
_FIELD_CHECKS = {
    "epoch": (_count, "an integer >= 0"),
    "global_step": (_count, "an integer >= 0"),
    "best_value": (_optional(lambda value: type(value) in (int, float)), "a number or null"),
    "best_epoch": (_optional(_count), "an integer >= 0 or null"),
    "best_step": (_optional(_count), "an integer >= 0 or null"),
    "best_checkpoint": (_optional(_checkpoint_name), "a checkpoint folder name or null"),
    "should_stop": (lambda value: type(value) is bool, "true or false"),
    "history": (lambda value: type(value) is list and all(type(entry) is dict for entry in value), "a list of objects"),
    "skipped_batches": (_count, "an integer >= 0"),
    "consecutive_skips": (_count, "an integer >= 0"),
}
