"""Early stopping on a monitored validation metric."""

from __future__ import annotations

import math
from typing import Any, Literal

from cadence.bounds import NonNegativeFloat, PositiveInt
from cadence.callbacks.base import Callback
from cadence.registry import CALLBACKS


@CALLBACKS.register("early_stopping")
class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` validations
    (each epoch's, and those every ``trainer.validate_every_steps`` updates: a stop may then come
    inside an epoch).

    ``monitor``/``mode`` default to the trainer's own, so that the model kept as best and the
    one that decides stopping agree. The best weights themselves are kept by the trainer
    (``restore_best``), whichever callback stops it.

    >>> stopper = EarlyStopping(monitor="val/accuracy", mode="max", patience=2)
    """

    def __init__(
        self,
        monitor: str | None = None,
        mode: Literal["min", "max"] | None = None,
        patience: PositiveInt = 5,
        min_delta: NonNegativeFloat = 0.0,
    ):
        if patience < 1:
            raise ValueError(f"early_stopping.patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"early_stopping.min_delta must be >= 0, got {min_delta}")
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.bad_validations = 0
        self.stopped_epoch: int | None = None

    def on_fit_start(self, trainer) -> None:
        self.monitor = self.monitor or trainer.monitor
        self.mode = self.mode or trainer.mode

    def is_improvement(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_validation_end(self, trainer, metrics: dict[str, float]) -> None:
        value = trainer.metric_value(metrics, self.monitor)
        if self.is_improvement(value):
            self.best = value
            self.bad_validations = 0
            return
        self.bad_validations += 1
        if self.bad_validations >= self.patience:
            self.stopped_epoch = trainer.state.epoch
            trainer.state.should_stop = True
            trainer.logger.info(
                "early stopping in epoch %d (step %d): %s has not improved for %d validations (best %.6g)",
                trainer.state.epoch + 1, trainer.state.global_step, self.monitor, self.bad_validations, self.best,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_validations": self.bad_validations, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.bad_validations = state["bad_validations"]
        self.stopped_epoch = state["stopped_epoch"]
