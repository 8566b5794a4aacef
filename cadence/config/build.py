"""The one place where a recipe turns into objects.

:func:`cadence.config.resolve.resolve` has validated every section (before anything is
written to disk); :func:`build` creates data, model, task, optimizer, schedule, metrics,
callbacks and the Trainer from those validated parameters, without checking them again.
Classes never see config objects: they receive plain arguments.

Objects that cadence passes itself are not part of a component's config (each registry
lists them, :attr:`cadence.registry.Registry.injected`): a task's ``model``, ``features`` and
``tokenizer``, an optimizer's ``model``, a schedule's ``optimizer``, a data set's
``work_dir``, ``seed`` and ``experiment_dir``. Facts the data knows (``num_classes``,
``class_names``, ``sample_rate``) and the trainer's ``mode`` fill the parameters of the same
name that the recipe left out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

from torch import nn

from cadence.checkpoint.retention import CheckpointPolicy, ranked_monitors
from cadence.config.resolve import ResolvedRecipe, resolve
from cadence.config.stages import StagePlan
from cadence.data.pipeline import FeaturePipeline, compute_statistics
from cadence.errors import CadenceError, ConfigError
from cadence.experiment import Experiment
from cadence.registry import TASKS, DataBundle
from cadence.runtime.device import resolve_device
from cadence.runtime.files import strict_json, write_bytes_atomic
from cadence.runtime.logs import get_logger
from cadence.trainer import Trainer
from cadence.weights import describe_report, freeze_parameters, initialize_parameters, preload_from_files

__all__ = ["Built", "build", "build_data", "build_features", "build_metrics", "build_task", "import_user_modules"]


@dataclasses.dataclass
class Built:
    trainer: Trainer  # its config is the resolved config, every fact of the data filled in
    data: DataBundle


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
                loaded = sys.modules.get(name)
                if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
                    modules.append(loaded)  # imported by an earlier run in this process: registering twice fails
                    continue
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


def _instantiate(recipe: ResolvedRecipe, path: str, facts: dict[str, Any], **objects: Any) -> Any:
    component = recipe.components[path]
    arguments = recipe.arguments(path, facts, **objects)
    with building(f"{path} ({component.name})"):
        return component.registry.get(component.name)(**arguments)


def build_loggers(recipe: ResolvedRecipe) -> list[Any]:
    """The recipe's ``experiment.loggers`` other than tensorboard (the Experiment's own writer)."""
    loggers = []
    for logger in recipe.loggers:
        with building(f"{logger.path} ({logger.name})"):
            loggers.append(logger.registry.get(logger.name)(**logger.arguments({})))
    return loggers


@contextlib.contextmanager
def building(what: str) -> Iterator[None]:
    """Any exception a component raises while it is built becomes one :class:`ConfigError` line
    naming its config path: values the schema could not judge (two that do not go together, a
    check inside a constructor) are still the recipe's, and a user error is one line."""
    try:
        yield
    except CadenceError:
        raise  # already says what to fix (a data error names its file)
    except Exception as error:
        message = " ".join(str(error).split()) or "no message"  # one line, whatever the component wrote
        raise ConfigError(f"{what}: cannot be built with these values: {type(error).__name__}: {message}") from error


def build_data(recipe: ResolvedRecipe, data_directory: Path, experiment_directory: Path | None = None) -> DataBundle:
    """The recipe's data: loaders for each split, and the facts they give the other components."""
    return _instantiate(
        recipe, "data", {}, work_dir=data_directory, seed=recipe.config.seed, experiment_dir=experiment_directory,
    )


def build_metrics(recipe: ResolvedRecipe, facts: dict[str, Any]) -> list[Any]:
    return [_instantiate(recipe, item.path, facts) for item in recipe.items("metrics")]


def build_features(
    recipe: ResolvedRecipe, facts: dict[str, Any], data: DataBundle | None = None, data_directory: Path | None = None
) -> nn.Module | None:
    """The ``features`` section as one module (a :class:`FeaturePipeline` for a list).

    Global normalization statistics are computed here, once, over the training data in
    length order, and saved as JSON in the experiment's ``data/`` folder (they also travel
    in checkpoints as buffers of the task). Without ``data`` (a model rebuilt from a
    checkpoint) they are left for the checkpoint's state to fill.
    """
    if "features" in recipe.components:
        return _instantiate(recipe, "features", facts)
    stages = recipe.items("features")
    if not stages:
        return None
    pipeline = FeaturePipeline([_instantiate(recipe, stage.path, facts) for stage in stages])
    if data is not None and pipeline.needs_statistics():
        passes = getattr(data.train, "statistics_pass", None)
        if passes is None:
            raise ConfigError("features: global normalization needs training data that offers statistics_pass(); use mode: utterance")
        with building("features (global normalization statistics over the training data)"):
            computed = compute_statistics(pipeline, passes(), resolve_device(recipe.trainer["device"]))
        document = {f"features.{list(pipeline.stages).index(stage)}": stage.statistics_dict() for stage in computed}
        write_bytes_atomic(Path(data_directory) / "feature_statistics.json", strict_json(document, indent=1).encode("utf-8"))
    return pipeline


def build_task(
    recipe: ResolvedRecipe, facts: dict[str, Any], data: DataBundle | None = None, data_directory: Path | None = None
) -> nn.Module:
    """Features, model and the task that holds them (all a model needs for inference)."""
    features = build_features(recipe, facts, data, data_directory)
    model = _instantiate(recipe, "model", facts)
    objects = {"model": model, "features": features}
    if "tokenizer" in inspect.signature(TASKS.get(recipe.components["task"].name)).parameters:
        # Text tasks get the data's tokenizer (or, rebuilt from a checkpoint, the saved one).
        objects["tokenizer"] = facts.get("tokenizer")
    return _instantiate(recipe, "task", facts, **objects)


def build_optimization(recipe: ResolvedRecipe, facts: dict[str, Any], task: nn.Module) -> tuple[Any, Any]:
    """The optimizer over ``task`` and its learning-rate schedule (None without one)."""
    optimizer = _instantiate(recipe, "optimizer", facts, model=task)
    schedule = recipe.config.scheduler
    return optimizer, _instantiate(recipe, "scheduler", facts, optimizer=optimizer) if schedule is not None else None


def build_stage_objects(recipe: ResolvedRecipe, facts: dict[str, Any]) -> tuple[nn.Module, Any, Any]:
    """A stage's task, optimizer and schedule (its features' statistics come with the tensors
    the stage carries over, so no data is read); the stage's ``freeze`` applied."""
    task = build_task(recipe, facts)
    log_trainable(freeze_parameters(task, recipe.config.freeze))
    return (task, *build_optimization(recipe, facts, task))


def prepare_weights(recipe: ResolvedRecipe, task: nn.Module, from_scratch: bool) -> None:
    """The recipe's ``initialization``, ``preload`` and ``freeze``, in that order, before the
    optimizer is made. ``from_scratch``: a training run that starts now (a preload source with
    ``init_for_train`` applies only then); a resumed run loads its checkpoint after this."""
    config, logger = recipe.config, get_logger()
    if config.initialization:
        with building("initialization"):
            initialized = initialize_parameters(task, config.initialization)
        logger.info("initialization: %d tensors set by %d rules", len(initialized), len(config.initialization))
    if config.preload:
        report = preload_from_files(task, config.preload, training_from_scratch=from_scratch)
        logger.info("%s", describe_report(report))
    log_trainable(freeze_parameters(task, config.freeze))


def log_trainable(counts: Any) -> None:
    get_logger().info("%s", counts)


def build(
    recipe: ResolvedRecipe, experiment: Experiment | None = None, work_dir: Path | None = None, data: DataBundle | None = None,
    from_scratch: bool = True,
) -> Built:
    """Create every object the resolved recipe describes and a Trainer ready to ``fit``.

    ``data``: the recipe's data, already built (by :func:`build_data`, for another component
    set over the same data); by default it is built here. ``from_scratch``: False for a run
    that will resume a checkpoint (preload sources with ``init_for_train`` are not read).
    """
    data_directory = work_dir or (experiment.directory / "data" if experiment else Path("data"))
    if data is None:
        data = build_data(recipe, data_directory, experiment.directory if experiment else None)
    # A plateau schedule or early stopping left without a mode follows the trainer's: the mode of
    # the monitored value, not of its tie-breakers.
    try:
        facts = {**data.facts, "mode": ranked_monitors(recipe.trainer["monitor"], recipe.trainer["mode"])[0][1]}
    except ValueError as error:  # "monitor ..." or "mode ...": a list of modes that does not fit the keys
        raise ConfigError(f"trainer.{error}") from None
    first = recipe.stages[0] if recipe.stages else recipe  # with stages, the first one's objects
    task = build_task(first, facts, data, data_directory)
    prepare_weights(first, task, from_scratch)
    optimizer, scheduler = build_optimization(first, facts, task)
    schedule = first.config.scheduler
    resolved = recipe.to_dict(facts)
    with building("trainer"):
        trainer = Trainer(
            task,
            optimizer,
            scheduler=scheduler,
            scheduler_interval=schedule.interval if schedule is not None else "epoch",
            scheduler_monitor=schedule.monitor if schedule is not None else None,
            metrics=build_metrics(recipe, facts),
            callbacks=[_instantiate(recipe, item.path, facts) for item in recipe.items("callbacks")],
            schedules=first.config.schedules,
            stages=StagePlan(recipe, facts, build_stage_objects, resolve) if recipe.stages else None,
            experiment=experiment,
            checkpoint_policy=CheckpointPolicy(**recipe.checkpoint),
            config=resolved,
            **recipe.trainer_arguments(),
        )
    return Built(trainer=trainer, data=data)
