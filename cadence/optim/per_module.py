"""One optimizer per module, each with its own learning-rate schedule (as PASE+ trains its
encoder and each of its workers).

The ``per_module`` optimizer splits the trainable parameters by name pattern; each part gets
an optimizer of its own kind and settings. The ``per_module`` scheduler gives any of them a
schedule of its own (the others keep their rate)::

    optimizer:
      name: per_module
      modules:
        encoder: {params: "encoder.*", name: adam, lr: 5.0e-4}
        workers: {params: ["workers.*", "heads.*"], name: sgd, lr: 1.0e-2, momentum: 0.9}
    scheduler:
      name: per_module
      modules:
        encoder: {name: phases, phases: [{kind: warmup, steps: 500}, {kind: newbob}]}
        workers: {name: exponential, gamma: 0.5, interval: epoch}

A parameter joins the first module whose pattern matches it (patterns as in
``optimizer.groups``: fnmatch, a leading ``model.`` may be left out); a trainable parameter
that no module takes is an error, never a parameter that silently does not train. Each
module's other keys are its optimizer's (``groups`` included), each schedule's its
scheduler's plus ``interval`` for a PyTorch one.

For the Trainer the set is one optimizer (:class:`OptimizerSet`: ``step``, ``zero_grad``,
``param_groups``, ``state_dict``) and the schedules one :class:`ScheduleSet`; both keep each
module's state under its name in checkpoints.

>>> from torch import nn
>>> model = nn.ModuleDict({"encoder": nn.Linear(2, 2), "head": nn.Linear(2, 1)})
>>> optimizers = per_module(model, {"encoder": {"params": "encoder.*", "name": "adam", "lr": 1e-3},
...                                 "head": {"params": "head.*", "name": "sgd", "lr": 0.1}})
>>> {name: type(member).__name__ for name, member in optimizers.optimizers.items()}
{'encoder': 'Adam', 'head': 'SGD'}
>>> [group["name"] for group in optimizers.param_groups]
['encoder/default', 'head/default']
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
import torch
from torch import nn

from cadence.errors import ConfigError
from cadence.optim.control import LearningRateSchedule, as_driver
from cadence.optim.optimizers import example_names, matches_any
from cadence.registry import OPTIMIZERS, SCHEDULERS, check_settings, validation_problems

__all__ = ["ModuleOptimizer", "ModuleSchedule", "OptimizerSet", "ScheduleSet", "per_module", "per_module_schedules"]


def _validated(config_class: type[pydantic.BaseModel], value: Any, where: str) -> Any:
    """``value`` as ``config_class`` (a module's entry), its mistakes a ConfigError naming ``where``."""
    try:
        return config_class.model_validate(value)
    except pydantic.ValidationError as error:
        raise ConfigError(validation_problems(error, where)) from None


class ModuleOptimizer(pydantic.BaseModel):
    """One module of a ``per_module`` optimizer: ``params`` (a pattern or a list of them),
    ``name`` (a registered optimizer) and that optimizer's settings."""

    model_config = pydantic.ConfigDict(extra="allow", allow_inf_nan=False)

    params: str | list[str]
    name: str

    @pydantic.model_validator(mode="after")
    def known_optimizer_and_settings(self) -> ModuleOptimizer:
        check_settings(OPTIMIZERS, self.name, self.settings())
        return self

    def patterns(self) -> list[str]:
        return [self.params] if isinstance(self.params, str) else list(self.params)

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModuleSchedule(pydantic.BaseModel):
    """One module's schedule: ``name`` (a registered scheduler), its settings, and for a
    PyTorch scheduler when it steps (``interval``)."""

    model_config = pydantic.ConfigDict(extra="allow", allow_inf_nan=False)

    name: str
    interval: Literal["epoch", "step"] = "epoch"

    @pydantic.model_validator(mode="after")
    def known_scheduler_and_settings(self) -> ModuleSchedule:
        check_settings(SCHEDULERS, self.name, self.settings())
        return self

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class _SelectedParameters:
    """What an optimizer factory reads of its ``model``: ``named_parameters()``, here one module's share."""

    def __init__(self, named: list[tuple[str, nn.Parameter]]):
        self.named = named

    def named_parameters(self):
        return iter(self.named)


def load_each(members: dict[str, Any], state: dict[str, Any], what: str) -> None:
    """Each member's saved state, by module name; a different set of modules is refused."""
    if set(state) != set(members):
        raise ValueError(f"the saved {what} are for modules {sorted(state)}; this run has {sorted(members)}")
    for key, member in members.items():
        member.load_state_dict(state[key])


class OptimizerSet:
    """Several optimizers stepped as one: the Trainer's optimizer for ``per_module``.

    ``param_groups`` lists every member's groups (the same dicts, so a schedule or a gradient
    scaler that writes into them reaches the members); each group's ``name`` starts with its
    module's. ``state_dict()`` is each member's under its module name.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]):
        if not optimizers:
            raise ValueError("an OptimizerSet needs at least one optimizer")
        self.optimizers = dict(optimizers)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for member in self.optimizers.values() for group in member.param_groups]

    @property
    def state(self) -> dict[Any, dict[str, Any]]:
        """Per-parameter state (moments) of every member, by parameter: a copy to read. (Not a
        ChainMap: a lookup there would add an empty entry to the first member's defaultdict.)"""
        return {parameter: state for member in self.optimizers.values() for parameter, state in member.state.items()}

    def step(self) -> None:
        for member in self.optimizers.values():
            member.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for member in self.optimizers.values():
            member.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {name: member.state_dict() for name, member in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_each(self.optimizers, state, "optimizers")


@OPTIMIZERS.register("per_module")
def per_module(model: nn.Module, modules: dict[str, ModuleOptimizer]) -> OptimizerSet:
    """One optimizer per module: ``modules`` maps a module's name to its ``params`` patterns,
    its optimizer's ``name`` and settings (see the module's docstring)."""
    if not modules:
        raise ConfigError("optimizer.modules: name at least one module, e.g. {encoder: {params: 'encoder.*', name: adam}}")
    modules = {key: _validated(ModuleOptimizer, value, f"optimizer.modules.{key}") for key, value in modules.items()}
    named = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    shares: dict[str, list[tuple[str, nn.Parameter]]] = {key: [] for key in modules}
    left: list[str] = []
    for name, parameter in named:
        owner = next((key for key, module in modules.items() if matches_any(name, module.patterns())), None)
        (left.append(name) if owner is None else shares[owner].append((name, parameter)))
    for key, module in modules.items():
        if not shares[key]:
            raise ConfigError(
                f"optimizer.modules.{key}.params: {module.params!r} takes no trainable parameter (none matches, or an earlier "
                f"module took them all); names look like {', '.join(example_names([name for name, _ in named]))}"
            )
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        raise ConfigError(
            f"optimizer.modules: no module takes {len(left)} trainable parameter(s): {shown}. Add a module whose params "
            "match them (a last one with params '*' takes the rest), or freeze them (freeze:)"
        )
    optimizers = {}
    for key, module in modules.items():
        schema = OPTIMIZERS.schema(module.name)
        settings = {name: getattr(schema.model_validate(module.settings()), name) for name in module.settings()}
        member = OPTIMIZERS.get(module.name)(_SelectedParameters(shares[key]), **settings)
        for group in member.param_groups:
            group["name"] = f"{key}/{group.get('name', 'default')}"
        optimizers[key] = member
    return OptimizerSet(optimizers)


class ScheduleSet:
    """The schedules of an :class:`OptimizerSet`'s modules, driven as one (the Trainer's
    schedule protocol, :class:`cadence.optim.control.ScheduleDriver`)."""

    def __init__(self, schedules: dict[str, Any], intervals: dict[str, str]):
        self.schedules = dict(schedules)
        self.drivers = {key: as_driver(schedule, "epoch" if isinstance(schedule, LearningRateSchedule) else intervals[key])
                        for key, schedule in self.schedules.items()}

    @property
    def needs_scores(self) -> bool:
        return any(driver.needs_scores for driver in self.drivers.values())

    def start_epoch(self, epoch: int, step: int) -> None:
        for driver in self.drivers.values():
            driver.start_epoch(epoch, step)

    def before_update(self, step: int, epoch: int) -> None:
        for driver in self.drivers.values():
            driver.before_update(step, epoch)

    def after_update(self) -> None:
        for driver in self.drivers.values():
            driver.after_update()

    def end_epoch(self, epoch: int, score: float | None) -> None:
        for driver in self.drivers.values():
            driver.end_epoch(epoch, score)

    def histories(self) -> dict[str, list[dict[str, Any]]]:
        """The learning-rate history of each module with a ``phases`` schedule."""
        return {key: schedule.history for key, schedule in self.schedules.items() if isinstance(schedule, LearningRateSchedule)}

    def state_dict(self) -> dict[str, Any]:
        return {key: schedule.state_dict() for key, schedule in self.schedules.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_each(self.schedules, state, "schedules")


@SCHEDULERS.register("per_module")
def per_module_schedules(optimizer: Any, modules: dict[str, ModuleSchedule], mode: Literal["min", "max"] = "min") -> ScheduleSet:
    """A schedule for some or all of a ``per_module`` optimizer's modules, by module name.
    ``mode`` (the trainer's) goes to each schedule that has one and does not set it."""
    if not isinstance(optimizer, OptimizerSet):
        raise ConfigError("scheduler: per_module schedules the modules of a per_module optimizer (optimizer.name: per_module)")
    modules = {key: _validated(ModuleSchedule, value, f"scheduler.modules.{key}") for key, value in modules.items()}
    unknown = sorted(set(modules) - set(optimizer.optimizers))
    if unknown:
        raise ConfigError(f"scheduler.modules: {', '.join(unknown)} is not a module of the optimizer; "
                          f"its modules are {', '.join(optimizer.optimizers)}")
    schedules = {}
    for key, module in modules.items():
        schema = SCHEDULERS.schema(module.name)
        settings = {name: getattr(schema.model_validate(module.settings()), name) for name in module.settings()}
        if "mode" in schema.model_fields and "mode" not in settings:
            settings["mode"] = mode  # Newbob and plateau follow the monitor the way the trainer does
        schedules[key] = SCHEDULERS.get(module.name)(optimizer=optimizer.optimizers[key], **settings)
    return ScheduleSet(schedules, {key: module.interval for key, module in modules.items()})
