"""Recipes: YAML files (plus ``key=value`` overrides) validated into a typed config.

The top level of a recipe has a fixed schema (:class:`RecipeConfig`). Each component
section (``data``, ``features``, ``model``, ``task``, ``optimizer``, ``scheduler``,
``metrics``, ``callbacks``) names a registered component; its parameters are
validated against the schema of that component's signature (see
:mod:`cadence.registry`), and so are the ``trainer`` (the Trainer's signature) and
``checkpoint`` (CheckpointPolicy's) sections, by :func:`cadence.config.resolve.resolve`.
Every mistake is a :class:`ConfigError` that names the full key path, e.g.
``model.chanels: unknown key (did you mean 'channels'?)``.

Example::

    >>> recipe = {"name": "demo", "data": {"name": "fsdd"}, "model": {"name": "cnn_classifier"}}
    >>> apply_overrides(recipe, ["trainer.max_epochs=3"])["trainer"]
    {'max_epochs': 3}
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from cadence.bounds import PositiveInt, Seed
from cadence.errors import ConfigError
from cadence.optim.scheduled_values import ScheduledValue
from cadence.weights import FreezePatterns, InitRule, PreloadSource
from cadence.registry import suggest

Strict = pydantic.ConfigDict(extra="forbid", protected_namespaces=())
# YAML's safe loader (no Python tags), in C when PyYAML was built with libyaml: ten times faster.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SectionConfig(pydantic.BaseModel):
    """A section whose keys are a constructor's parameters, checked by
    :func:`cadence.config.resolve.resolve` against the schema of its signature."""

    model_config = pydantic.ConfigDict(extra="allow")

    def parameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def names_to_components(value: Any) -> Any:
    """A list of components may name them: ``[accuracy, f1]`` is ``[{name: accuracy}, {name: f1}]``."""
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


class ComponentConfig(SectionConfig):
    """``{name: registered_name, ...parameters}``: the parameters of the component registered as ``name``."""

    name: str


class SchedulerConfig(ComponentConfig):
    # "epoch": stepped after each epoch's validation; "step": after every optimizer step.
    interval: Literal["epoch", "step"] = "epoch"
    # Only for reduce_on_plateau: the validation value it follows (default: trainer.monitor).
    monitor: str | None = None


class StageConfig(pydantic.BaseModel):
    """One stage of a recipe's ``stages:`` list (see :mod:`cadence.config.stages`)."""

    model_config = Strict
    epochs: PositiveInt | None = None  # None: until the end of training (the last stage only)
    overrides: dict[str, Any] = {}  # dotted keys, as on the command line: {model.rnn_layers: 2}
    function: str | None = None  # a STAGE_FUNCTIONS name, called when the stage starts for more overrides
    grown_parts: Literal["init", "zero"] = "init"  # the new part of a grown tensor: fresh, or zero (silent units)


class ExperimentConfig(pydantic.BaseModel):
    model_config = Strict
    root: str = "runs"
    # Where the run's figures go besides metrics.jsonl (always written): "tensorboard" (the
    # experiment's own writer), "csv", "mlflow" ({name: mlflow, tracking_uri: ...}), or a logger
    # registered under LOGGERS (cadence.loggers).
    loggers: list[ComponentConfig] = [ComponentConfig(name="tensorboard")]
    # Recipes from before experiment.loggers: false takes tensorboard out of the list, true puts
    # it in; folded into loggers here, so that loggers is the one place that says.
    tensorboard: bool | None = pydantic.Field(default=None, exclude=True)

    @pydantic.field_validator("loggers", mode="before")
    @classmethod
    def _logger_names(cls, value: Any) -> Any:
        return names_to_components(value)  # [tensorboard, csv]

    @pydantic.model_validator(mode="after")
    def _fold_tensorboard(self) -> ExperimentConfig:
        if self.tensorboard is not None:
            others = [logger for logger in self.loggers if logger.name != "tensorboard"]
            self.loggers = [ComponentConfig(name="tensorboard"), *others] if self.tensorboard else others
            self.tensorboard = None
        if any(logger.name == "tensorboard" and logger.parameters() for logger in self.loggers):
            raise ValueError("loggers: tensorboard takes no options (its curves go to EXP_DIR/tensorboard)")
        return self

    @property
    def uses_tensorboard(self) -> bool:
        return any(logger.name == "tensorboard" for logger in self.loggers)


class RecipeConfig(pydantic.BaseModel):
    """The whole recipe. Its sections' keys are validated further by :func:`cadence.config.resolve.resolve`."""

    model_config = Strict
    name: str
    seed: Seed = 0  # a number, never a boolean; numpy and torch generators both take it
    imports: list[str] = []
    data: ComponentConfig
    # One component, or a list applied in order (e.g. log_mel, normalize, spec_augment).
    features: ComponentConfig | list[ComponentConfig] | None = None
    model: ComponentConfig
    task: ComponentConfig = ComponentConfig(name="classification")
    optimizer: ComponentConfig = ComponentConfig(name="adamw", lr=1e-3)
    scheduler: SchedulerConfig | None = None
    metrics: list[ComponentConfig] = [ComponentConfig(name="accuracy")]
    callbacks: list[ComponentConfig] = []
    # Where the weights start and which train (cadence.weights): rules by name pattern, first match
    # wins; checkpoints or .safetensors files to load from; parameters that do not train.
    initialization: list[InitRule] = []
    preload: list[PreloadSource] = []
    freeze: FreezePatterns = []
    # Values by epoch or step: {dropout: {epochs: {1: 0.0, 3: 0.2}}, ...} (cadence.optim.scheduled_values).
    schedules: dict[str, ScheduledValue] = {}
    # Epoch ranges with their own overrides: a model that grows, CTC then joint CTC/attention, ...
    stages: list[StageConfig] = []
    # The Trainer's arguments (and the process settings: threads, deterministic kernels).
    trainer: SectionConfig = SectionConfig()
    # When checkpoints are saved (any trigger may be null) and which are kept: CheckpointPolicy.
    checkpoint: SectionConfig = SectionConfig()
    experiment: ExperimentConfig = ExperimentConfig()

    @pydantic.field_validator("metrics", mode="before")
    @classmethod
    def _metric_names(cls, value: Any) -> Any:
        return names_to_components(value)  # [accuracy, f1]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file with YAML's safe loader (no Python tags)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found; give the path to a .yaml recipe, e.g. recipes/fsdd/digits.yaml")
    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f":{where.line + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from error
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, got {type(content).__name__}")
    return content


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=3e-3"`` -> (["optimizer", "lr"], 0.003); values are YAML-typed."""
    key, separator, raw_value = text.partition("=")
    if not separator or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': expected KEY=VALUE with a dotted key, e.g. trainer.max_epochs=5")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as error:
        # The problem alone: PyYAML's message adds the position over several lines.
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        fix = ("YAML tags that make Python objects are never read: give a plain value" if "tag" in problem
               else "quote a value that holds YAML characters: key='\"text\"'")
        raise ConfigError(f"override '{text}': the value is not valid YAML: {problem}; {fix}") from error
    return key.split("."), _number_if_float(value)


def _number_if_float(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; users mean the number."""
    if isinstance(value, str):
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            return value
    return value


def apply_overrides(recipe: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``recipe`` with each ``dotted.key=value`` set; list items by index."""
    result = copy.deepcopy(recipe)
    for text in overrides:
        keys, value = parse_override(text)
        set_key(result, keys, value, f"override '{text}'")
    return result


def set_key(recipe: dict[str, Any], keys: list[str], value: Any, where: str) -> None:
    """Set ``recipe[keys[0]][keys[1]]... = value`` in place (list items by index; missing
    sections are created); ``where`` names the override in errors."""
    node: Any = recipe
    for depth, key in enumerate(keys[:-1]):
        node = _child(node, key, keys[: depth + 1], where)
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(node, last, keys, where)] = value
    else:
        node[last] = value


def _child(node: Any, key: str, path: list[str], where: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, key, path, where)]
    if not isinstance(node, dict):
        raise ConfigError(f"{where}: '{'.'.join(path[:-1])}' is a value, not a section")
    if node.get(key) is None:  # a missing section is created, so overrides can add one
        node[key] = {}
    return node[key]


def _list_index(node: list, key: str, path: list[str], where: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"{where}: '{'.'.join(path)}' must index the list (0 to {len(node) - 1})")
    return int(key)


def format_validation_error(error: pydantic.ValidationError, prefix: str = "", schema: Any = None) -> str:
    """One line per problem: full key path, what was expected, what was given."""
    lines = []
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        path = ".".join([prefix, *location] if prefix else location)
        if problem["type"] == "extra_forbidden":
            known = _known_keys(schema, problem["loc"][:-1]) if schema is not None else []
            lines.append(f"{path}: unknown key{suggest(location[-1], known)}; valid keys: {', '.join(known) or 'none'}")
        elif problem["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            given = problem.get("input")
            lines.append(f"{path}: {problem['msg'].lower()}; got {given!r} ({type(given).__name__})")
    return "; ".join(lines)


def _known_keys(schema: Any, location: tuple) -> list[str]:
    """Field names of the (nested) pydantic model at ``location``, for suggestions."""
    model = schema
    for part in location:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_in_annotation(field.annotation)
    return list(getattr(model, "model_fields", {}))


def _model_in_annotation(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _model_in_annotation(argument)
        if found is not None:
            return found
    return None


def validate_recipe(recipe: dict[str, Any]) -> RecipeConfig:
    try:
        return RecipeConfig.model_validate(recipe)
    except pydantic.ValidationError as error:
        raise ConfigError(format_validation_error(error, schema=RecipeConfig)) from None


def load_recipe(path: str | Path, overrides: list[str] = ()) -> RecipeConfig:
    """Read, override and validate the top level of a recipe."""
    return validate_recipe(apply_overrides(load_yaml(path), list(overrides)))
