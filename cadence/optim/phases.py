"""The phases a learning-rate schedule runs through, in order (:mod:`cadence.optim.control`).

Each phase is a small typed model: what a recipe's ``scheduler.phases`` list may hold, validated
with the key's path before anything is built, and the arithmetic of its shape. A phase gives a
*factor* of the optimizer's learning rate (1.0 is ``optimizer.lr``; each parameter group is
scaled by the same factor, so groups keep their ratios). It starts from ``entry``, the factor
the previous phase ended at (1.0 for the first), and lasts ``steps`` optimizer updates or
``epochs`` epochs; the last phase may leave both out and run to the end of training.

Shapes, by ``kind`` (``t``: updates or epochs since the phase began, ``T``: its length):

- ``warmup``: from ``start`` to 1.0, linearly or geometrically; update ``T - 1`` is at 1.0;
- ``constant``: ``factor``, or ``entry`` when left out;
- ``exponential``: ``entry * gamma ** (t // every)``, counting ``every_steps`` or ``every_epochs``
  (PASE's LinearScheduler is ``gamma: decay_factor, every_epochs: lr_update_interval``);
- ``cosine``, ``polynomial``: from ``entry`` to ``final`` over the phase;
- ``inverse_sqrt``: ``entry * sqrt(scale_steps / (scale_steps + t))``;
- ``noam``: ``entry * min(s / warmup_steps, sqrt(warmup_steps / s))`` with ``s = t + 1``: the
  Transformer schedule, normalised so its peak is ``optimizer.lr`` (Noam's
  ``d_model ** -0.5 * warmup_steps ** -0.5``, times its scale, is that peak);
- ``learning_rates``: RETURNN's predefined rates by epoch (absolute rates, not factors: a list
  for epochs 1, 2, ... or a mapping from 1-based epoch, each rate holding until the next);
- ``newbob`` (``newbob_rel``), ``newbob_abs``, ``newbob_multi_epoch``, ``plateau``: decided
  once per epoch from validation scores (:mod:`cadence.optim.newbob`).

>>> import pydantic
>>> phase = pydantic.TypeAdapter(Phase).validate_python({"kind": "cosine", "steps": 100, "final": 0.1})
>>> round(phase.at(entry=1.0, position=50), 4)
0.55
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal, Union

import pydantic

from cadence.bounds import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

__all__ = ["Phase", "ScoreDriven", "check_phases", "phase_length"]

Factor = NonNegativeFloat


class PhaseModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    steps: PositiveInt | None = None  # the phase's length in optimizer updates ...
    epochs: PositiveInt | None = None  # ... or in epochs (at most one of them)
    needs_length: ClassVar[bool] = False  # a shape that goes from one value to another needs to know over how long
    counts: ClassVar[str] = "epochs"  # what its position counts when it has no length

    @pydantic.model_validator(mode="after")
    def _one_length(self):
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give the phase's length as steps or as epochs, not both")
        if self.needs_length and self.steps is None and self.epochs is None:
            raise ValueError(f"a {self.kind} phase needs its length: steps or epochs")
        return self

    @property
    def unit(self) -> Literal["steps", "epochs"]:
        """What this phase's position counts: updates or epochs."""
        if self.steps is not None:
            return "steps"
        return "epochs" if self.epochs is not None else self.counts

    @property
    def length(self) -> int | None:
        return self.steps if self.steps is not None else self.epochs

    def at(self, entry: float, position: int) -> float:
        raise NotImplementedError


class Warmup(PhaseModel):
    kind: Literal["warmup"]
    shape: Literal["linear", "exponential"] = "linear"
    start: Annotated[Factor, pydantic.Field(lt=1)] = 0.0  # the factor it rises from; exponential needs > 0
    needs_length: ClassVar[bool] = True

    @pydantic.model_validator(mode="after")
    def _exponential_start(self):
        if self.shape == "exponential" and self.start == 0:
            raise ValueError("an exponential warmup starts above 0: set start, e.g. 0.01")
        return self

    def at(self, entry: float, position: int) -> float:
        progress = min(1.0, (position + 1) / self.length)  # the last update of the phase is at the peak
        if self.shape == "linear":
            return self.start + (1.0 - self.start) * progress
        return self.start ** (1.0 - progress)


class Constant(PhaseModel):
    kind: Literal["constant"]
    factor: Factor | None = None  # None: hold the factor the phase starts at

    def at(self, entry: float, position: int) -> float:
        return entry if self.factor is None else self.factor


class Exponential(PhaseModel):
    kind: Literal["exponential"]
    gamma: PositiveFloat
    every_steps: PositiveInt | None = None
    every_epochs: PositiveInt | None = None

    @pydantic.model_validator(mode="after")
    def _one_interval(self):
        if self.every_steps is not None and self.every_epochs is not None:
            raise ValueError("give every_steps or every_epochs, not both")
        if self.length is not None and self.every_steps is not None and self.unit == "epochs":
            raise ValueError("a phase measured in epochs decays every_epochs; use steps for its length to decay every_steps")
        if self.length is not None and self.every_epochs is not None and self.unit == "steps":
            raise ValueError("a phase measured in steps decays every_steps; use epochs for its length to decay every_epochs")
        return self

    @property
    def unit(self) -> Literal["steps", "epochs"]:
        if self.length is not None:
            return super().unit
        return "steps" if self.every_steps is not None else "epochs"

    def at(self, entry: float, position: int) -> float:
        every = self.every_steps or self.every_epochs or 1
        return entry * self.gamma ** (position // every)


class Cosine(PhaseModel):
    kind: Literal["cosine"]
    final: Factor = 0.0
    needs_length: ClassVar[bool] = True

    def at(self, entry: float, position: int) -> float:
        progress = min(1.0, position / self.length)
        return self.final + (entry - self.final) * (1.0 + math.cos(math.pi * progress)) / 2.0


class Polynomial(PhaseModel):
    kind: Literal["polynomial"]
    final: Factor = 0.0
    power: PositiveFloat = 1.0
    needs_length: ClassVar[bool] = True

    def at(self, entry: float, position: int) -> float:
        progress = min(1.0, position / self.length)
        return self.final + (entry - self.final) * (1.0 - progress) ** self.power


class StepShape(PhaseModel):
    """A shape that counts updates (its formula is in steps), so a length in epochs is refused."""

    counts: ClassVar[str] = "steps"

    @pydantic.model_validator(mode="after")
    def _in_steps(self):
        if self.epochs is not None:
            raise ValueError(f"{self.kind} counts updates: give its length in steps")
        return self


class InverseSqrt(StepShape):
    kind: Literal["inverse_sqrt"]
    scale_steps: PositiveInt

    def at(self, entry: float, position: int) -> float:
        return entry * math.sqrt(self.scale_steps / (self.scale_steps + position))


class Noam(StepShape):
    kind: Literal["noam"]
    warmup_steps: PositiveInt

    def at(self, entry: float, position: int) -> float:
        step = position + 1
        return entry * min(step / self.warmup_steps, math.sqrt(self.warmup_steps / step))


class LearningRates(PhaseModel):
    """RETURNN's ``learning_rates``: absolute rates for the phase's epochs (the factor is the
    rate over ``optimizer.lr``)."""

    kind: Literal["learning_rates"]
    rates: list[PositiveFloat] | dict[PositiveInt, PositiveFloat]

    @pydantic.model_validator(mode="after")
    def _rates(self):
        if self.steps is not None or self.epochs is not None:
            raise ValueError("learning_rates lasts as many epochs as it lists: leave out steps and epochs")
        if not self.rates:
            raise ValueError("learning_rates needs at least one rate")
        if isinstance(self.rates, dict) and 1 not in self.rates:
            raise ValueError("a learning_rates mapping starts at epoch 1 (epochs are 1-based, as in the logs)")
        return self

    @property
    def unit(self) -> Literal["steps", "epochs"]:
        return "epochs"

    @property
    def length(self) -> int:
        return len(self.rates) if isinstance(self.rates, list) else max(self.rates)

    def rate(self, position: int) -> float:
        """The absolute rate of the phase's epoch ``position`` (0-based)."""
        if isinstance(self.rates, list):
            return self.rates[min(position, len(self.rates) - 1)]
        return self.rates[max(epoch for epoch in self.rates if epoch <= position + 1)]

    def at(self, entry: float, position: int) -> float:
        raise TypeError("learning_rates are absolute: LearningRateSchedule divides them by optimizer.lr")


class Newbob(PhaseModel):
    """RETURNN's Newbob rules; see :mod:`cadence.optim.newbob` for what each does."""

    kind: Literal["newbob", "newbob_rel", "newbob_abs", "newbob_multi_epoch"]
    decay: Annotated[PositiveFloat, pydantic.Field(lt=1)] = 0.5
    growth: Annotated[PositiveFloat, pydantic.Field(ge=1)] = 1.0
    threshold: float = -0.01
    min_learning_rate: NonNegativeFloat = 0.0
    min_epochs_per_new_lr: NonNegativeInt = 0
    divide_by_old: bool = False  # relative error over the older score (RETURNN's newbob_relative_error_div_by_old)
    relative_to_learning_rate: bool = False  # relative error divided by lr / optimizer.lr
    # newbob_multi_epoch only:
    num_epochs: PositiveInt | None = None  # default 5
    update_interval: PositiveInt | None = None  # default num_epochs
    grow_threshold: float | None = None  # default threshold

    @pydantic.model_validator(mode="after")
    def _applicable(self):
        multi_only = [key for key in ("num_epochs", "update_interval", "grow_threshold") if getattr(self, key) is not None]
        if multi_only and self.kind != "newbob_multi_epoch":
            raise ValueError(f"{', '.join(multi_only)} only apply to kind newbob_multi_epoch")
        if self.grow_threshold is not None and self.grow_threshold > self.threshold:
            raise ValueError("grow_threshold must not exceed threshold: an epoch cannot call for decay and growth at once")
        relative_only = [key for key in ("divide_by_old", "relative_to_learning_rate") if getattr(self, key)]
        if relative_only and self.kind == "newbob_abs":
            raise ValueError(f"{', '.join(relative_only)} only apply to the relative rules (newbob, newbob_multi_epoch)")
        return self

    @property
    def unit(self) -> Literal["steps", "epochs"]:
        return "steps" if self.steps is not None else "epochs"

    def at(self, entry: float, position: int) -> float:
        raise TypeError("Newbob decides by epoch from scores: see cadence.optim.newbob")


class Plateau(PhaseModel):
    """Multiply the rate by ``factor`` when the score has not improved by ``threshold``
    (relative) for more than ``patience`` epochs (PyTorch's ReduceLROnPlateau, without cooldown)."""

    kind: Literal["plateau"]
    factor: Annotated[PositiveFloat, pydantic.Field(lt=1)] = 0.5
    patience: NonNegativeInt = 2
    threshold: NonNegativeFloat = 1e-4
    min_learning_rate: NonNegativeFloat = 0.0

    def at(self, entry: float, position: int) -> float:
        raise TypeError("plateau decides by epoch from scores: see cadence.optim.newbob")


Phase = Annotated[
    Union[Warmup, Constant, Exponential, Cosine, Polynomial, InverseSqrt, Noam, LearningRates, Newbob, Plateau],
    pydantic.Field(discriminator="kind"),
]
ScoreDriven = (Newbob, Plateau)


def phase_length(phase: PhaseModel) -> tuple[str, int] | None:
    """(unit, length) of a phase that ends, None for one that runs to the end of training."""
    length = phase.length
    return None if length is None else (phase.unit, length)


def check_phases(phases: list[PhaseModel]) -> list[PhaseModel]:
    """Only the last phase may run to the end of training."""
    if not phases:
        raise ValueError("give at least one phase")
    for index, phase in enumerate(phases[:-1]):
        if phase_length(phase) is None:
            raise ValueError(f"phase {index} ({phase.kind}) has no length, so the phases after it never start: "
                             "give it steps or epochs (only the last phase may run to the end)")
    return phases
