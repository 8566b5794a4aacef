"""Schedules of any value: dropout, clipping, SpecAugment, curriculum, loss weights (RETURNN's
``get_network(epoch)["#config"]``, declared instead of computed).

A recipe's ``schedules:`` section maps a *setting* to its schedule::

    schedules:
      dropout: {epochs: {1: 0.0, 3: 0.2}}                  # every dropout of the task, from epoch 3 on
      trainer.clip_grad_norm: {epochs: {1: 10.0, 5: null}}  # clip only in the first four epochs
      features.2.time_masks: {steps: [[0, 0], [2000, 2]], interpolate: constant}
      data.max_duration: {epochs: {1: 3.0, 3: null}}        # curriculum: short utterances first
      task.losses.ctc.weight: {steps: [[0, 1.0], [1000, 0.3]]}

- ``{epochs: {E: value, ...}}``: from 1-based epoch E on (epoch 1 must be given);
- ``{steps: [[S, value], ...]}``: by update count, linear between the points (or
  ``interpolate: constant``), held before the first and after the last.

``null`` is a value too (no clipping, no duration limit). An integer setting takes the value
rounded. Values are functions of the epoch and update count only, so a resumed run sets the same
values at the same steps: nothing is checkpointed.

Settings (``key``: what is set):

- ``dropout``: ``p`` of every dropout layer of the task, and the ``dropout`` between the layers
  of its recurrent stacks (``nn.LSTM``/``nn.GRU``);
- ``trainer.clip_grad_norm``, ``trainer.clip_grad_value``;
- ``task.<path>``, ``model.<path>``, ``features.<path>``, ``callbacks.<i>.<path>``: an existing
  number attribute of the task, its model, its features (``features.<i>`` is the i-th stage of a
  list of features) or a callback (``callbacks.0.std``: weight noise), walked through
  attributes, list indices and mapping keys;
- ``data.<option>``: a batching option of the training data (``max_duration``,
  ``min_duration``, ``max_frames``, ``max_seqs``, ``chunk_size``, ``chunk_step``), by epoch only:
  an epoch's batch plan is made when it starts.

>>> value = ScheduledValue(steps=[(0, 0.0), (100, 1.0)])
>>> value.at(step=25, epoch=0), value.at(step=400, epoch=3)
(0.25, 1.0)
>>> ScheduledValue(epochs={1: 10.0, 5: None}).at(step=0, epoch=4) is None
True
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Any, Callable, Literal

import pydantic
from torch import nn

from cadence.bounds import NonNegativeInt, PositiveInt
from cadence.errors import ConfigError

__all__ = ["DATA_OPTIONS", "ScheduledSettings", "ScheduledValue"]

DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
TRAINER_SETTINGS = ("clip_grad_norm", "clip_grad_value")
DATA_OPTIONS = ("max_duration", "min_duration", "max_frames", "max_seqs", "chunk_size", "chunk_step")
ROOTS = ("dropout", "trainer.", "task.", "model.", "features.", "callbacks.", "data.")


class ScheduledValue(pydantic.BaseModel):
    """One setting's schedule: by epoch (piecewise constant) or by update (piecewise linear)."""

    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    epochs: dict[PositiveInt, float | None] | None = None
    steps: list[tuple[NonNegativeInt, float | None]] | None = None
    interpolate: Literal["linear", "constant"] | None = None  # steps only; default linear

    @pydantic.model_validator(mode="after")
    def _one_form(self):
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give either epochs: {1: value, ...} or steps: [[0, value], ...]")
        if self.epochs is not None:
            if 1 not in self.epochs:
                raise ValueError("epochs must give the value of epoch 1 (epochs are 1-based, as in the logs)")
            if self.interpolate is not None:
                raise ValueError("interpolate applies to steps; a schedule by epochs holds each value until the next")
            return self
        points = [step for step, _ in self.steps]
        if not points or points != sorted(set(points)):
            raise ValueError("steps must be [step, value] pairs with increasing steps")
        if self.interpolate != "constant" and any(value is None for _, value in self.steps):
            raise ValueError("null cannot be interpolated: use interpolate: constant")
        return self

    @property
    def per_step(self) -> bool:
        return self.steps is not None

    def at(self, step: int, epoch: int) -> float | None:
        """The value for the update at ``step`` (updates done before it) in 0-based ``epoch``."""
        if self.epochs is not None:
            return self.epochs[max(number for number in self.epochs if number <= epoch + 1)]
        points = [point for point, _ in self.steps]
        index = bisect.bisect_right(points, step) - 1
        if index < 0:
            return self.steps[0][1]
        (left, value), following = self.steps[index], self.steps[index + 1:]
        if not following or self.interpolate == "constant":
            return value
        right, target = following[0]
        return value + (target - value) * (step - left) / (right - left)


@dataclasses.dataclass
class Setting:
    """Where a scheduled value goes: ``assign(value)``, and whether it takes integers."""

    assign: Callable[[Any], None]
    integer: bool = False


class ScheduledSettings:
    """The Trainer's schedules of values; :meth:`bind` finds each setting in the trainer's
    objects (its key named in any error), :meth:`apply` sets them."""

    def __init__(self, schedules: dict[str, ScheduledValue | dict] | None = None):
        adapter = pydantic.TypeAdapter(ScheduledValue)
        self.schedules = {key: adapter.validate_python(value) for key, value in (schedules or {}).items()}
        self.settings: dict[str, Setting] = {}
        self.values: dict[str, float | None] = {}

    def __bool__(self) -> bool:
        return bool(self.schedules)

    def bind(self, trainer: Any, train_data: Any = None) -> None:
        """Resolve every key against ``trainer`` (and the training data, for ``data.*``)."""
        self.settings = {key: find_setting(trainer, train_data, key, value) for key, value in self.schedules.items()}

    def apply(self, step: int, epoch: int, epoch_start: bool) -> None:
        """Set the values for the update at ``step``: all of them at an epoch's start, the
        per-step ones before every batch."""
        for key, schedule in self.schedules.items():
            if not (epoch_start or schedule.per_step):
                continue
            value = schedule.at(step, epoch)
            setting = self.settings[key]
            if value is not None and setting.integer:
                value = int(round(value))
            try:
                setting.assign(value)
            except ValueError as error:  # pydantic's ValidationError too: a batching option out of its bounds
                raise ConfigError(f"schedules.{key}: {value!r} (epoch {epoch + 1}, step {step}) is refused: {error}") from None
            self.values[key] = value

    def logs(self) -> dict[str, float]:
        """The values now set, as ``train/schedule/<key>`` (a ``null`` is not logged)."""
        return {f"train/schedule/{key}": float(value) for key, value in self.values.items() if value is not None}


def find_setting(trainer: Any, train_data: Any, key: str, schedule: ScheduledValue) -> Setting:
    where = f"schedules.{key}"
    if key == "dropout":
        return dropout_setting(trainer.task, where)
    root, _, path = key.partition(".")
    if root == "trainer":
        if path not in TRAINER_SETTINGS:
            raise ConfigError(f"{where}: the trainer's scheduled settings are {', '.join(TRAINER_SETTINGS)}")
        return Setting(lambda value: setattr(trainer, path, value))
    if root == "data":
        return data_setting(trainer.train_loader if train_data is None else train_data, path, schedule, where)
    objects = {"task": trainer.task, "model": getattr(trainer.task, "model", None), "features": getattr(trainer.task, "features", None),
               "callbacks": list(trainer.callbacks)}
    if root not in objects or not path:
        raise ConfigError(f"{where}: a scheduled setting is dropout or starts with {', '.join(ROOTS[1:])}")
    if objects[root] is None:
        raise ConfigError(f"{where}: the task has no {root}")
    return attribute_setting(objects[root], path.split("."), where)


def dropout_setting(task: nn.Module, where: str) -> Setting:
    layers = [module for module in task.modules() if isinstance(module, DROPOUTS)]
    stacks = [module for module in task.modules() if isinstance(module, nn.RNNBase) and module.num_layers > 1]
    if not layers and not stacks:
        raise ConfigError(f"{where}: the task has no dropout layer and no multi-layer LSTM/GRU to set")

    def assign(value: Any) -> None:
        if value is None or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}: a dropout probability lies in [0, 1], got {value!r}")
        for layer in layers:
            layer.p = value
        for stack in stacks:
            stack.dropout = value  # read at every forward; PyTorch warns only when set at construction

    return Setting(assign)


def attribute_setting(root: Any, parts: list[str], where: str) -> Setting:
    """An existing number attribute at ``parts`` below ``root``."""
    owner = root
    for depth, part in enumerate(parts[:-1]):
        owner = child(owner, part, where, parts[: depth + 1])
    last = parts[-1]
    if isinstance(owner, dict):
        if last not in owner:
            raise ConfigError(f"{where}: no key '{last}' there; keys: {', '.join(map(str, owner))}")
        current = owner[last]
    elif not hasattr(owner, last):
        raise ConfigError(f"{where}: {type(owner).__name__} has no attribute '{last}'")
    else:
        current = getattr(owner, last)
    if isinstance(current, bool) or not isinstance(current, (int, float, type(None))):
        raise ConfigError(f"{where}: only a number setting can be scheduled; this one is a {type(current).__name__}")

    def assign(value: Any) -> None:
        if isinstance(owner, dict):
            owner[last] = value
        else:
            setattr(owner, last, value)

    return Setting(assign, integer=isinstance(current, int))


def child(owner: Any, part: str, where: str, walked: list[str]) -> Any:
    if isinstance(owner, dict):
        if part not in owner:
            raise ConfigError(f"{where}: no key '{part}' at {'.'.join(walked)}; keys: {', '.join(map(str, owner))}")
        return owner[part]
    stages = getattr(owner, "stages", None)
    if part.isdigit() and isinstance(stages, nn.ModuleList):
        owner = stages  # features.2: the third stage of a feature pipeline
    if part.isdigit() and isinstance(owner, (list, tuple, nn.ModuleList, nn.Sequential)):
        if int(part) >= len(owner):
            raise ConfigError(f"{where}: index {part} is out of range at {'.'.join(walked)} ({len(owner)} items)")
        return owner[int(part)]
    if not hasattr(owner, part):
        raise ConfigError(f"{where}: {type(owner).__name__} has no attribute '{part}' (at {'.'.join(walked)})")
    return getattr(owner, part)


def data_setting(loader: Any, option: str, schedule: ScheduledValue, where: str) -> Setting:
    if option not in DATA_OPTIONS:
        raise ConfigError(f"{where}: the training data's scheduled options are {', '.join(DATA_OPTIONS)}")
    if schedule.per_step:
        raise ConfigError(f"{where}: batching is planned once per epoch: schedule it by epochs")
    change = getattr(loader, "set_batching", None)
    if change is None:
        raise ConfigError(f"{where}: the training data ({type(loader).__name__}) has no batching to schedule; "
                          "data.* schedules need cadence's audio data loader")
    integer = option in ("max_frames", "max_seqs")
    return Setting(lambda value: change(**{option: value}), integer=integer)
