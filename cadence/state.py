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
    best_checkpoint: str | None = None  # checkpoint folder name holding the best weights
    should_stop: bool = False  # set by anyone (callbacks, max_steps) to end fit cleanly
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one entry per validation
    skipped_batches: int = 0  # updates dropped for a NaN or infinite loss or gradient (on_nonfinite: skip)
    consecutive_skips: int = 0  # of those, the ones since the last update taken

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back a saved state; a field of the wrong type (a damaged or crafted checkpoint) is a
        ``TypeError`` naming it, before anything changes."""
        for field in dataclasses.fields(self):
            if field.name in state and not _has_type(state[field.name], _FIELD_TYPES[field.name]):
                raise TypeError(f"trainer_state.{field.name} is {state[field.name]!r}, not {_FIELD_TYPES[field.name]}")
        for field in dataclasses.fields(self):
            if field.name in state:
                setattr(self, field.name, state[field.name])


# The types each field may hold (ints are floats too, as JSON has them).
_FIELD_TYPES = {
    "epoch": "int", "global_step": "int", "best_value": "float or null", "best_epoch": "int or null",
    "best_checkpoint": "str or null", "should_stop": "bool", "history": "list of dicts",
    "skipped_batches": "int", "consecutive_skips": "int",
}


def _has_type(value: Any, kind: str) -> bool:
    if value is None:
        return kind.endswith("or null")
    if kind.startswith("int"):
        return type(value) is int and value >= 0
    if kind.startswith("float"):
        return type(value) in (int, float)
    if kind.startswith("str"):
        return type(value) is str and "/" not in value and not value.startswith(".")
    if kind == "bool":
        return type(value) is bool
    return type(value) is list and all(type(entry) is dict for entry in value)
