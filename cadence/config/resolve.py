"""Resolving a recipe: every section validated once, before anything is built or written.

:func:`resolve` checks each section against the schema of the constructor it configures
(components by their registered names; ``trainer`` by :class:`~cadence.trainer.Trainer` plus
the process settings; ``checkpoint`` by :class:`~cadence.checkpoint.retention.CheckpointPolicy`)
and returns a :class:`ResolvedRecipe`, whose validated parameters :mod:`cadence.config.build`
then uses as they are. It runs before any folder exists, so a typo costs nothing.

Facts that only the data knows (``num_classes``, ``class_names``, ``sample_rate``, a
``tokenizer``) and the trainer's ``mode`` fill parameters of the same name that the recipe
left out, once the data is built (:meth:`ResolvedRecipe.arguments`); a required parameter
that no fact fills is then a :class:`~cadence.errors.ConfigError` naming its key.

>>> from cadence.config.schema import validate_recipe
>>> recipe = resolve(validate_recipe({"name": "demo", "data": {"name": "fsdd"}, "model": {"name": "cnn_classifier"}}))
>>> recipe.to_dict()["optimizer"]["weight_decay"]   # adamw's default, made explicit
0.01
>>> recipe.arguments("model", {"num_classes": 10})["num_classes"]
10
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pydantic

from cadence.checkpoint.retention import CheckpointPolicy
from cadence.config import components  # noqa: F401  (registers the built-in components)
from cadence.config.schema import ComponentConfig, RecipeConfig, format_validation_error
from cadence.config.stages import resolve_stages
from cadence.errors import ConfigError
from cadence.registry import (
    CALLBACKS, DATASETS, FEATURES, LOGGERS, METRICS, MODELS, OPTIMIZERS, SCHEDULERS, TASKS, Registry,
)
from cadence.run_record import settings_section_schema, trainer_section_schema
from cadence.runtime.process import PROCESS_SETTINGS
from cadence.trainer import Trainer

__all__ = ["DATA_FACTS", "ResolvedComponent", "ResolvedRecipe", "resolve"]

# Facts a recipe may leave out even where a constructor requires them: the data gives them.
DATA_FACTS = ("num_classes", "class_names", "sample_rate")
REGISTRIES: dict[str, Registry] = {
    "data": DATASETS, "features": FEATURES, "model": MODELS, "task": TASKS, "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS, "metrics": METRICS, "callbacks": CALLBACKS,
}
# Components inside a section: experiment.loggers (tensorboard, the experiment's own writer, is not one).
NESTED_REGISTRIES: dict[str, Registry] = {"loggers": LOGGERS}
# Sections whose "mode" follows the trainer's (a plateau schedule, early stopping); elsewhere a
# parameter called mode means something else (e.g. normalization's utterance or global).
FOLLOW_TRAINER_MODE = ("scheduler", "callbacks")


@dataclasses.dataclass
class ResolvedComponent:
    """One component section, validated: its registered name and its parameters (defaults filled)."""

    path: str  # "model", "metrics.0", ...
    section: str  # the recipe section, which says the registry: "metrics"
    name: str
    parameters: dict[str, Any]  # validated values, in signature order
    given: tuple[str, ...]  # the keys the recipe set (facts never replace them)

    @property
    def registry(self) -> Registry:
        return REGISTRIES.get(self.section) or NESTED_REGISTRIES[self.section]

    def arguments(self, facts: dict[str, Any]) -> dict[str, Any]:
        """The constructor's arguments: the parameters, and the facts for those the recipe left out."""
        if self.section == "data":
            return dict(self.parameters)  # the data's facts are its own output
        applicable = {name: value for name, value in facts.items() if name != "mode" or self.section in FOLLOW_TRAINER_MODE}
        schema = self.registry.schema(self.name)
        arguments = {}
        for name, field in schema.model_fields.items():
            if name in applicable and name not in self.given:
                arguments[name] = applicable[name]
            elif name in self.parameters:
                arguments[name] = self.parameters[name]
            elif not field.is_required():
                arguments[name] = field.get_default(call_default_factory=True)
            else:
                raise ConfigError(f"{self.path}.{name}: required key is missing, and the data gives no {name}; set it in the recipe")
        return arguments

    def resolved(self, facts: dict[str, Any] | None) -> dict[str, Any]:
        """The parameters as the resolved config shows them: without facts, those the data
        will fill are left out."""
        return _jsonable(self.parameters if facts is None else self.arguments(facts))


@dataclasses.dataclass
class ResolvedRecipe:
    """A recipe whose every section has been validated (by :func:`resolve`)."""

    config: RecipeConfig
    components: dict[str, ResolvedComponent]  # by path: "data", "features" or "features.0", "metrics.1", ...
    trainer: dict[str, Any]  # the trainer section, validated: Trainer arguments and process settings
    checkpoint: dict[str, Any]  # CheckpointPolicy's arguments
    stages: list[ResolvedRecipe] = dataclasses.field(default_factory=list)  # each stage's recipe, resolved
    loggers: list[ResolvedComponent] = dataclasses.field(default_factory=list)  # experiment.loggers but tensorboard

    def items(self, section: str) -> list[ResolvedComponent]:
        """The components of a list section (``metrics``, ``callbacks``, a list of ``features``), in order."""
        return [component for path, component in self.components.items() if path.startswith(f"{section}.")]

    def arguments(self, path: str, facts: dict[str, Any], **objects: Any) -> dict[str, Any]:
        """The arguments the component at ``path`` is built with: ``objects`` cadence passes
        itself, then its parameters with facts filled in."""
        return {**objects, **self.components[path].arguments(facts)}

    def trainer_arguments(self) -> dict[str, Any]:
        """The trainer section without the process settings (applied by the command, not the Trainer)."""
        return {name: value for name, value in self.trainer.items() if name not in PROCESS_SETTINGS}

    def process_settings(self) -> dict[str, Any]:
        return {name: self.trainer[name] for name in PROCESS_SETTINGS}

    def to_dict(self, facts: dict[str, Any] | None = None) -> dict[str, Any]:
        """The resolved config (what ``config.yaml``, ``--print-config`` and every checkpoint hold):
        the recipe with every default filled in and, given the data's ``facts``, every fact."""
        resolved = self.config.model_dump(mode="json")
        for path, component in self.components.items():
            section, _, index = path.partition(".")
            if index:  # an item of a list: its name, then its parameters in signature order
                resolved[section][int(index)] = {"name": component.name, **component.resolved(facts)}
            else:  # a section: the recipe's keys in the recipe's order, then the rest
                resolved[section] = {**resolved[section], **component.resolved(facts)}
        for logger in self.loggers:  # experiment.loggers.N
            resolved["experiment"]["loggers"][int(logger.path.rsplit(".", 1)[1])] = {"name": logger.name, **logger.resolved(facts)}
        # A schedule is by epochs or by steps: the other form's null is left out.
        resolved["schedules"] = {key: {name: value for name, value in schedule.items() if value is not None}
                                 for key, schedule in resolved["schedules"].items()}
        resolved["trainer"] = _jsonable(self.trainer)
        resolved["checkpoint"] = _jsonable(self.checkpoint)
        return resolved


def resolve(config: RecipeConfig) -> ResolvedRecipe:
    """Validate every section of ``config`` once; the parameters the data will give may be left out."""
    trainer = _validated("trainer", trainer_section_schema(Trainer), config.trainer.parameters())
    checkpoint = _validated("checkpoint", settings_section_schema(CheckpointPolicy), config.checkpoint.parameters())
    components = {}
    for section in REGISTRIES:
        value = getattr(config, section)
        if isinstance(value, list):
            for index, item in enumerate(value):
                components[f"{section}.{index}"] = _resolve_component(section, f"{section}.{index}", item)
        elif value is not None:
            components[section] = _resolve_component(section, section, value)
    loggers = [_resolve_component("loggers", f"experiment.loggers.{index}", logger)
               for index, logger in enumerate(config.experiment.loggers) if logger.name != "tensorboard"]
    return ResolvedRecipe(config, components, dict(trainer), dict(checkpoint), resolve_stages(config, resolve), loggers)


def _resolve_component(section: str, path: str, component: ComponentConfig) -> ResolvedComponent:
    registry = REGISTRIES.get(section) or NESTED_REGISTRIES[section]
    registry.get(component.name, f"{path}.name")
    given = component.parameters()
    fields = registry.schema(component.name).model_fields
    # DATA_FACTS the recipe left out are not required yet: the data gives them when it is built.
    # The data's facts are its output, never its input: only other sections wait for them.
    open_facts = () if section == "data" else tuple(name for name in DATA_FACTS if name in fields and name not in given)
    parameters = _validated(path, registry.schema(component.name, exclude=open_facts), given)
    return ResolvedComponent(path, section, component.name, parameters, tuple(given))


def _validated(path: str, schema: type[pydantic.BaseModel], parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters checked against ``schema``: values by field, in the schema's order."""
    try:
        validated = schema.model_validate(parameters)
    except pydantic.ValidationError as error:
        raise ConfigError(format_validation_error(error, prefix=path, schema=schema)) from None
    return {name: getattr(validated, name) for name in schema.model_fields}


def _jsonable(parameters: dict[str, Any]) -> dict[str, Any]:
    return pydantic.TypeAdapter(dict[str, Any]).dump_python(parameters, mode="json")
