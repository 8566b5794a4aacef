"""The one place where a recipe turns into objects.

:func:`resolve` validates every component section against its registered schema (before
anything is written to disk) and returns the fully resolved config, defaults filled in;
:func:`build` then creates data, model, task, optimizer, schedule, metrics, callbacks
and the Trainer. Classes never see config objects: they receive plain arguments.

Objects that cadence passes itself are not part of a component's config: a task's
``model`` and ``features``, an optimizer's ``model``, a schedule's ``optimizer``, a data
set's ``work_dir``, ``seed`` and ``experiment_dir``, a text task's ``tokenizer``. Facts the data knows (``num_classes``, ``class_names``,
``sample_rate``) fill the parameters of the same name unless the recipe sets them.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic
from torch import nn

from cadence.config import components  # noqa: F401  (registers the built-in components)
from cadence.config.schema import ComponentConfig, RecipeConfig, format_validation_error
from cadence.errors import ConfigError
from cadence.checkpoint.retention import CheckpointPolicy
from cadence.runtime.files import write_bytes_atomic
from cadence.data.pipeline import FeaturePipeline, compute_statistics
from cadence.runtime.device import resolve_device
from cadence.experiment import Experiment
from cadence.registry import CALLBACKS, DATASETS, FEATURES, METRICS, MODELS, OPTIMIZERS, SCHEDULERS, TASKS, Registry
from cadence.trainer import Trainer

DATA_FACTS = ("num_classes", "class_names", "sample_rate")
INJECTED = {
    "data": ("work_dir", "seed", "experiment_dir"),
    "features": (),
    "model": (),
    "task": ("model", "features", "tokenizer"),
    "optimizer": ("model",),
    "scheduler": ("optimizer",),
    "metrics": (),
    "callbacks": (),
}


@dataclasses.dataclass
class DataBundle:
    """What a registered data set builder returns: loaders plus facts for the other components."""

    train: Any
    valid: Any
    test: Any
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    manifests: dict[str, Path] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Built:
    trainer: Trainer
    data: DataBundle
    resolved: dict[str, Any]


def import_user_modules(imports: list[str], recipe_directory: Path | None) -> list[ModuleType]:
    """Import each ``imports:`` entry: a module name, or a ``.py`` path relative to the recipe."""
    modules = []
    for index, entry in enumerate(imports):
        try:
            if entry.endswith(".py"):
                path = Path(entry)
                if not path.is_absolute() and recipe_directory is not None:
                    path = recipe_directory / path
                if not path.is_file():
                    raise ConfigError(f"imports.{index}: file '{entry}' not found (paths are relative to the recipe)")
                name = path.stem
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(entry)
        except ConfigError:
            raise
        except ImportError as error:
            raise ConfigError(f"imports.{index}: cannot import '{entry}' ({error}); is it on PYTHONPATH or a path to a .py file?") from error
        modules.append(module)
    return modules


def _registry(section: str) -> Registry:
    return {
        "data": DATASETS, "features": FEATURES, "model": MODELS, "task": TASKS, "optimizer": OPTIMIZERS,
        "scheduler": SCHEDULERS, "metrics": METRICS, "callbacks": CALLBACKS,
    }[section]


def _validate(section: str, path: str, component: ComponentConfig, facts: dict[str, Any]) -> dict[str, Any]:
    """Validate one component's parameters; return them resolved (defaults filled)."""
    registry = _registry(section)
    registry.get(component.name, f"{path}.name")
    parameters = component.parameters()
    schema = registry.schema(component.name, INJECTED[section])
    # Facts fill matching parameters the recipe left out (e.g. a model's num_classes).
    for name, value in facts.items():
        if name in schema.model_fields and name not in parameters:
            parameters[name] = value
    missing_facts = {name for name in DATA_FACTS if name in schema.model_fields and name not in parameters}
    if missing_facts and not facts:
        schema = registry.schema(component.name, (*INJECTED[section], *missing_facts))
    try:
        validated = schema.model_validate(parameters)
    except pydantic.ValidationError as error:
        raise ConfigError(format_validation_error(error, prefix=path, schema=schema)) from None
    return {name: getattr(validated, name) for name in schema.model_fields}


def resolve(config: RecipeConfig, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe with every component validated and its defaults filled in.

    Without ``facts`` (before the data is built) parameters that data facts will fill are
    not required yet; this is the early check that runs before any folder is created.
    """
    facts = facts or {}
    resolved = config.model_dump(mode="json")
    for section in ("data", "features", "model", "task", "optimizer", "scheduler"):
        component = getattr(config, section)
        if component is not None and not isinstance(component, list):
            # The data's own facts (its tokenizer, its classes) never fill the data section.
            parameters = _validate(section, section, component, {} if section == "data" else facts)
            resolved[section] = {**resolved[section], **_jsonable(parameters)}
    for section in ("features", "metrics", "callbacks"):
        components = getattr(config, section)
        if not isinstance(components, list):
            continue
        for index, component in enumerate(components):
            parameters = _validate(section, f"{section}.{index}", component, facts)
            resolved[section][index] = {"name": component.name, **_jsonable(parameters)}
    return resolved


def _jsonable(parameters: dict[str, Any]) -> dict[str, Any]:
    return pydantic.TypeAdapter(dict[str, Any]).dump_python(parameters, mode="json")


def _instantiate(section: str, path: str, component: ComponentConfig, facts: dict[str, Any], **objects: Any) -> Any:
    parameters = _validate(section, path, component, facts)
    return _registry(section).get(component.name)(**objects, **parameters)


def build_data(config: RecipeConfig, data_directory: Path, experiment_directory: Path | None = None) -> DataBundle:
    """The recipe's data: loaders for each split, and the facts they give the other components."""
    return _instantiate(
        "data", "data", config.data, {}, work_dir=data_directory, seed=config.seed, experiment_dir=experiment_directory,
    )


def build_metrics(config: RecipeConfig, facts: dict[str, Any]) -> list[Any]:
    return [_instantiate("metrics", f"metrics.{index}", item, facts) for index, item in enumerate(config.metrics)]


def build_features(
    config: RecipeConfig, facts: dict[str, Any], data: DataBundle | None = None, data_directory: Path | None = None
) -> nn.Module | None:
    """The ``features`` section as one module (a :class:`FeaturePipeline` for a list).

    Global normalization statistics are computed here, once, over the training data in
    length order, and saved as JSON in the experiment's ``data/`` folder (they also travel
    in checkpoints as buffers of the task). Without ``data`` (a model rebuilt from a
    checkpoint) they are left for the checkpoint's state to fill.
    """
    if config.features is None:
        return None
    if not isinstance(config.features, list):
        return _instantiate("features", "features", config.features, facts)
    pipeline = FeaturePipeline(
        [_instantiate("features", f"features.{index}", item, facts) for index, item in enumerate(config.features)]
    )
    if data is not None and pipeline.needs_statistics():
        passes = getattr(data.train, "statistics_pass", None)
        if passes is None:
            raise ConfigError("features: global normalization needs training data that offers statistics_pass(); use mode: utterance")
        computed = compute_statistics(pipeline, passes(), resolve_device(config.trainer.device))
        document = {f"features.{list(pipeline.stages).index(stage)}": stage.statistics_dict() for stage in computed}
        write_bytes_atomic(Path(data_directory) / "feature_statistics.json", json.dumps(document, indent=1).encode("utf-8"))
    return pipeline


def build_task(
    config: RecipeConfig, facts: dict[str, Any], data: DataBundle | None = None, data_directory: Path | None = None
) -> nn.Module:
    """Features, model and the task that holds them (all a model needs for inference)."""
    features = build_features(config, facts, data, data_directory)
    model = _instantiate("model", "model", config.model, facts)
    objects = {"model": model, "features": features}
    if "tokenizer" in inspect.signature(TASKS.get(config.task.name, "task.name")).parameters:
        # Text tasks get the data's tokenizer (or, rebuilt from a checkpoint, the saved one).
        objects["tokenizer"] = facts.get("tokenizer")
    return _instantiate("task", "task", config.task, facts, **objects)


def build(config: RecipeConfig, experiment: Experiment | None = None, work_dir: Path | None = None) -> Built:
    """Create every object the recipe describes and a Trainer ready to ``fit``."""
    data_directory = work_dir or (experiment.directory / "data" if experiment else Path("data"))
    data = build_data(config, data_directory, experiment.directory if experiment else None)
    # A plateau schedule or early stopping left without a mode follows the trainer's.
    facts = {**data.facts, "mode": config.trainer.mode}
    task = build_task(config, facts, data, data_directory)
    optimizer = _instantiate("optimizer", "optimizer", config.optimizer, facts, model=task)
    scheduler = None
    if config.scheduler is not None:
        scheduler = _instantiate("scheduler", "scheduler", config.scheduler, facts, optimizer=optimizer)
    metrics = build_metrics(config, facts)
    callbacks = [_instantiate("callbacks", f"callbacks.{index}", item, facts) for index, item in enumerate(config.callbacks)]
    resolved = resolve(config, facts)
    trainer_options = config.trainer
    trainer = Trainer(
        task,
        optimizer,
        scheduler=scheduler,
        scheduler_interval=config.scheduler.interval if config.scheduler else "epoch",
        scheduler_monitor=config.scheduler.monitor if config.scheduler else None,
        max_epochs=trainer_options.max_epochs,
        max_steps=trainer_options.max_steps,
        device=trainer_options.device,
        clip_grad_norm=trainer_options.clip_grad_norm,
        clip_grad_value=trainer_options.clip_grad_value,
        metrics=metrics,
        train_metrics_every=trainer_options.train_metrics_every,
        monitor=trainer_options.monitor,
        mode=trainer_options.mode,
        restore_best=trainer_options.restore_best,
        callbacks=callbacks,
        experiment=experiment,
        log_every=trainer_options.log_every,
        progress_bar=trainer_options.progress_bar,
        checkpoint_policy=CheckpointPolicy(**config.checkpoint.model_dump()),
        config=resolved,
    )
    return Built(trainer=trainer, data=data, resolved=resolved)
