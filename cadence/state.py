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

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for field in dataclasses.fields(self):
            if field.name in state:
                setattr(self, field.name, state[field.name])
