"""Learning-rate control: the phases of :mod:`cadence.optim.phases` run in sequence, with
Newbob and plateau decided from validation scores (:mod:`cadence.optim.newbob`).

A recipe writes::

    optimizer: {name: adamw, lr: 1.0e-3}
    scheduler:
      name: phases
      phases:
        - {kind: warmup, steps: 500}                      # 0 -> 1e-3 over 500 updates
        - {kind: newbob, decay: 0.5, threshold: -0.01}    # then RETURNN's Newbob on scheduler.monitor

The Trainer drives every schedule through one small protocol (:class:`ScheduleDriver`):
``start_epoch`` before an epoch's first batch (Newbob decides the epoch's rate here),
``before_update`` before each optimizer step (the rate of that update is set here),
``after_update``, and ``end_epoch`` with the epoch's validation score. PyTorch's own
schedulers take part through :class:`TorchSchedule`.

Everything a :class:`LearningRateSchedule` knows is a function of the update count, the
epoch and its *history*: one record per epoch, with the rate it started at, the phase, the
score that validation gave and, under Newbob, what decided the rate. The history is the
schedule's checkpointed state (resume is exact) and the run's ``learning_rates.json``.

>>> import torch
>>> parameter = torch.nn.Parameter(torch.zeros(1))
>>> optimizer = torch.optim.SGD([parameter], lr=0.1)
>>> schedule = LearningRateSchedule(optimizer, [{"kind": "warmup", "steps": 4}, {"kind": "cosine", "steps": 4}])
>>> rates = []
>>> for step in range(9):
...     schedule.before_update(step, epoch=0)
...     rates.append(round(optimizer.param_groups[0]["lr"], 4))
>>> rates
[0.025, 0.05, 0.075, 0.1, 0.1, 0.0854, 0.05, 0.0146, 0.0]
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Protocol

import pydantic
import torch
from torch.optim import lr_scheduler

from cadence.optim.newbob import decide
from cadence.optim.phases import LearningRates, Phase, PhaseModel, ScoreDriven, check_phases, phase_length
from cadence.registry import SCHEDULERS

__all__ = ["LearningRateSchedule", "ScheduleDriver", "TorchSchedule", "as_driver", "phases"]

PHASES = pydantic.TypeAdapter(list[Phase])


class ScheduleDriver(Protocol):
    """How the Trainer drives a learning-rate schedule (see the module's docstring)."""

    needs_scores: bool

    def start_epoch(self, epoch: int, step: int) -> None: ...
    def before_update(self, step: int, epoch: int) -> None: ...
    def after_update(self) -> None: ...
    def end_epoch(self, epoch: int, score: float | None) -> None: ...


class LearningRateSchedule:
    """Phases in sequence over one optimizer (``epoch``: 0-based, as the train state counts;
    history records are 1-based, as the logs print)."""

    def __init__(self, optimizer: torch.optim.Optimizer, phases: list[PhaseModel | dict], mode: Literal["min", "max"] = "min"):
        self.optimizer = optimizer
        self.phases = check_phases(PHASES.validate_python(list(phases)))
        self.mode = mode
        self.reference = float(optimizer.defaults["lr"])  # optimizer.lr: factor 1.0, and Newbob's "learning_rate"
        self.base_rates = [float(group["lr"]) for group in optimizer.param_groups]
        self.index = 0  # the phase now running
        self.starts: list[dict[str, Any]] = [{"step": 0, "epoch": 0, "entry": 1.0}]  # where each phase began
        self.history: list[dict[str, Any]] = []

    @property
    def needs_scores(self) -> bool:
        return any(isinstance(phase, ScoreDriven) for phase in self.phases)

    # ------------------------------------------------------------------ what the Trainer calls
    def start_epoch(self, epoch: int, step: int) -> None:
        """Decide and record the rate of ``epoch`` (once: a resumed epoch keeps its record)."""
        self.advance(step, epoch)
        if not self.history or self.history[-1]["epoch"] < epoch + 1:
            self.history.append(self.new_record(epoch, step))
        self.apply(step, epoch)

    def before_update(self, step: int, epoch: int) -> None:
        self.advance(step, epoch)
        self.apply(step, epoch)

    def after_update(self) -> None:
        pass  # the next update's rate is set by before_update

    def end_epoch(self, epoch: int, score: float | None) -> None:
        for record in self.history:
            if record["epoch"] == epoch + 1:
                record["score"] = score

    # ------------------------------------------------------------------ the rate
    def factor(self, step: int, epoch: int) -> float:
        """The factor of ``optimizer.lr`` for the update at ``step`` in ``epoch``."""
        phase, start = self.phases[self.index], self.starts[self.index]
        if isinstance(phase, ScoreDriven):
            record = self.history[-1] if self.history else None
            decided_here = record is not None and record["epoch"] == epoch + 1 and record["phase"] == self.index
            return record["learning_rate"] / self.reference if decided_here else start["entry"]
        position = self.position(step, epoch)
        if isinstance(phase, LearningRates):
            return phase.rate(position) / self.reference
        return phase.at(start["entry"], position)

    def position(self, step: int, epoch: int) -> int:
        """Updates or epochs since the current phase began (held at its end for a last phase with a length)."""
        phase, start = self.phases[self.index], self.starts[self.index]
        position = step - start["step"] if phase.unit == "steps" else epoch - start["epoch"]
        length = phase_length(phase)
        return position if length is None else min(position, length[1])

    def advance(self, step: int, epoch: int) -> None:
        """Move past every phase that has run its length (not past the last)."""
        while self.index < len(self.phases) - 1:
            unit, length = phase_length(self.phases[self.index])
            start = self.starts[self.index]
            if (step - start["step"] if unit == "steps" else epoch - start["epoch"]) < length:
                return
            entry = self.end_factor()
            self.index += 1
            self.starts.append({"step": step, "epoch": epoch, "entry": entry})

    def end_factor(self) -> float:
        """The factor the current phase ends at, which the next one starts from."""
        phase, start = self.phases[self.index], self.starts[self.index]
        if isinstance(phase, LearningRates):
            return phase.rate(phase.length - 1) / self.reference
        if isinstance(phase, ScoreDriven):
            decided = [record for record in self.history if record["phase"] == self.index]
            return decided[-1]["learning_rate"] / self.reference if decided else start["entry"]
        return phase.at(start["entry"], phase.length)

    def new_record(self, epoch: int, step: int) -> dict[str, Any]:
        phase, start = self.phases[self.index], self.starts[self.index]
        record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "phase": self.index, "kind": phase.kind}
        if isinstance(phase, ScoreDriven):
            last = self.history[-1] if self.history else None
            continues = last is not None and last["phase"] == self.index
            previous = last["learning_rate"] if continues else start["entry"] * self.reference
            rate, decision = decide(phase, epoch + 1, self.history, previous, self.reference, self.mode,
                                    first_epoch=start["epoch"] + 1, entry_rate=start["entry"] * self.reference)
            record.update(learning_rate=rate, decision=json_safe(decision))
        else:
            record["learning_rate"] = self.factor(step, epoch) * self.reference
        record["score"] = None
        return record

    def apply(self, step: int, epoch: int) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_rates):
            raise RuntimeError(f"the optimizer has {len(groups)} parameter groups, the schedule was built for {len(self.base_rates)}")
        factor = self.factor(step, epoch)
        for group, base in zip(groups, self.base_rates):
            group["lr"] = base * factor

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index, "starts": [dict(start) for start in self.starts],
                "history": [dict(record) for record in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        index, starts, history = state["index"], state["starts"], state["history"]
        if not isinstance(index, int) or not 0 <= index < len(self.phases) or len(starts) != index + 1:
            raise ValueError(f"the saved schedule is in phase {index!r} of {len(starts)}; this one has {len(self.phases)} phases")
        if not all(isinstance(record, dict) and isinstance(record.get("epoch"), int) for record in history):
            raise ValueError("the saved learning-rate history is not a list of epoch records")
        self.index, self.starts, self.history = index, [dict(start) for start in starts], [dict(record) for record in history]


def json_safe(value: Any) -> Any:
    """Infinite floats (a relative error against a score of 0) as strings: checkpoints hold strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


@SCHEDULERS.register("phases")
def phases(
    optimizer: torch.optim.Optimizer, phases: Annotated[list[Phase], pydantic.AfterValidator(check_phases)],
    mode: Literal["min", "max"] = "min",
) -> LearningRateSchedule:
    """Phases run in sequence; Newbob and plateau follow ``scheduler.monitor`` in the trainer's ``mode``."""
    return LearningRateSchedule(optimizer, phases, mode)


class TorchSchedule:
    """A PyTorch scheduler under the Trainer's protocol: stepped after each update
    (``interval="step"``) or after each epoch, and ``ReduceLROnPlateau`` with the epoch's score."""

    def __init__(self, scheduler: Any, interval: Literal["epoch", "step"]):
        self.scheduler = scheduler
        self.interval = interval
        self.needs_scores = isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)

    def start_epoch(self, epoch: int, step: int) -> None:
        pass

    def before_update(self, step: int, epoch: int) -> None:
        pass

    def after_update(self) -> None:
        if self.interval == "step" and not self.needs_scores:
            self.scheduler.step()

    def end_epoch(self, epoch: int, score: float | None) -> None:
        if self.needs_scores:
            if score is not None:
                self.scheduler.step(score)
        elif self.interval == "epoch":
            self.scheduler.step()


class NoSchedule:
    needs_scores = False

    def start_epoch(self, epoch: int, step: int) -> None:
        pass

    def before_update(self, step: int, epoch: int) -> None:
        pass

    def after_update(self) -> None:
        pass

    def end_epoch(self, epoch: int, score: float | None) -> None:
        pass


def as_driver(scheduler: Any, interval: Literal["epoch", "step"]) -> ScheduleDriver:
    """The Trainer's view of ``scheduler``: a LearningRateSchedule or any other object that follows
    the :class:`ScheduleDriver` protocol itself (per-module schedules), a PyTorch scheduler, or None."""
    if scheduler is None:
        return NoSchedule()
    if all(callable(getattr(scheduler, method, None)) for method in ("start_epoch", "before_update", "after_update", "end_epoch")):
        if interval != "epoch":
            raise ValueError(f"a {type(scheduler).__name__} sets the rate before every update itself: leave scheduler_interval out")
        return scheduler
    return TorchSchedule(scheduler, interval)
