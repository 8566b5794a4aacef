"""A run's record: the config that rebuilds it, and what its experiment folder keeps of it.

The Trainer calls the two functions at the top from ``fit``; they are the one code path that
writes ``config.yaml``, ``config.sha256``, ``provenance.json``, ``code/`` and ``results.json``,
for a run built from a recipe and for one built in Python alike:

- :func:`maybe_record_run` (at the start of ``fit``, after any resume) returns the run's config:
  the resolved recipe of a Trainer built by :func:`cadence.config.build.build`, or, for one
  built in Python, a recipe written from what each registered component recorded when it was
  made (:mod:`cadence.construction`). An object that cannot be rebuilt (an unregistered model,
  a plain torch optimizer, a plain DataLoader) is named in one warning; such a run gets no
  config (its weights are still checkpointed and ``fit(resume_from=...)`` resumes it exactly).
- :func:`maybe_write_results` (at the end of ``fit``) writes ``results.json``.

This module is below the config layer (the loop may import it): it knows the registries and
the trainer section's schema, never :mod:`cadence.config`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterable

import pydantic
import torch

from cadence.checkpoint.rng import last_seed
from cadence.construction import bundle_of, construction_of
from cadence.registry import CALLBACKS, DATASETS, FEATURES, LOGGERS, METRICS, MODELS, OPTIMIZERS, SCHEDULERS, TASKS, Registry
from cadence.registry import schema_from_signature
from cadence.runtime.files import config_hash
from cadence.runtime.logs import get_logger
from cadence.runtime.process import apply_process_settings, process_settings

if TYPE_CHECKING:
    from cadence.experiment import Experiment
    from cadence.trainer import Trainer

__all__ = [
    "TRAINER_OBJECTS", "RunDescription", "describe_run", "import_name", "maybe_record_run", "maybe_write_results",
    "trainer_section_schema",
]

# Trainer.__init__ parameters that are not keys of a recipe's ``trainer`` section: objects that
# cadence builds and passes itself, and the schedule's stepping, which the ``scheduler`` section says.
TRAINER_OBJECTS = (
    "task", "optimizer", "scheduler", "metrics", "callbacks", "experiment", "checkpoint_policy", "config",
    "scheduler_interval", "scheduler_monitor", "schedules", "stages",
)


@functools.lru_cache(maxsize=None)
def settings_section_schema(settings_class: type) -> type[pydantic.BaseModel]:
    """The schema of a section holding one settings object's arguments (``checkpoint``:
    :class:`~cadence.checkpoint.retention.CheckpointPolicy`), made once per class."""
    return schema_from_signature(settings_class)


@functools.lru_cache(maxsize=None)
def trainer_section_schema(trainer_class: type) -> type[pydantic.BaseModel]:
    """The ``trainer`` section: the Trainer's own arguments (bounds included, from its
    annotations) and the process settings of :func:`~cadence.runtime.process.apply_process_settings`."""
    return schema_from_signature(trainer_class, apply_process_settings, exclude=TRAINER_OBJECTS)


def maybe_record_run(trainer: Trainer, train_data: Any, val_data: Any = None, test_data: Any = None) -> dict[str, Any] | None:
    """The run's config (``trainer.config``, else the description of a Python-built run, else
    None), after writing it and the run's provenance into the experiment folder, if any.

    A fit that resumes a checkpoint of its own folder adds a resume entry to provenance.json
    (and rewrites config.yaml: the config it continues with) instead of starting the record anew.
    """
    experiment = trainer.experiment
    if experiment is None:
        return trainer.config
    description = describe_run(trainer, train_data, val_data, test_data)
    if description.unrebuildable:
        get_logger().warning(
            "this run cannot be rebuilt from its folder (no config.yaml: cadence resume, cadence.load and "
            "cadence.trainer_from_checkpoint will not work on it): %s. Its weights are still checkpointed, and "
            "fit(resume_from=...) resumes it exactly", "; ".join(description.unrebuildable),
        )
    bundle = description.bundle
    experiment.record_run(
        description.config,
        seed=description.config["seed"] if description.config is not None else None,
        data_manifests=dict(bundle.manifests) if bundle is not None else {},
        modules=description.modules,
        resumed_from=trainer.resumed_from,
    )
    return description.config


def maybe_write_results(experiment: Experiment | None, config: dict[str, Any] | None, results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with the experiment folder and the config's hash in front, written to
    ``results.json`` when there is an experiment; unchanged otherwise."""
    if experiment is None:
        return results
    digest = config_hash(config) if config is not None else None
    results = {"experiment": str(experiment.directory), "config_sha256": digest, **results}
    experiment.write_results(results)
    return results


@dataclasses.dataclass
class RunDescription:
    """What :func:`describe_run` found out about a run."""

    config: dict[str, Any] | None  # the resolved recipe; None when an object cannot be rebuilt
    unrebuildable: list[str]  # one line per object that cannot be rebuilt, saying how to fix it
    bundle: Any  # the DataBundle the training loader belongs to (its manifests go to provenance), or None
    modules: dict[str, ModuleType]  # the user's modules that define the run's components, by import name


def describe_run(trainer: Trainer, train_data: Any, val_data: Any = None, test_data: Any = None) -> RunDescription:
    """The run as a recipe: its own config when it was built from one, else one written from
    the records of its registered components."""
    found = bundle_of(train_data)
    bundle = found[0] if found is not None and found[1] == "train" else None
    if trainer.config is not None:
        return RunDescription(trainer.config, [], bundle, modules_of(trainer.config.get("imports", [])))
    recipe = _Recipe()
    config = recipe.describe(trainer, bundle, {"train": train_data, "valid": val_data, "test": test_data})
    return RunDescription(None if recipe.problems else config, recipe.problems, bundle, recipe.modules)


def import_name(module: ModuleType) -> str:
    """The name a module is imported by when a run is rebuilt: the calling script (``__main__``)
    by its file's stem, anything else by its own name."""
    if module.__name__ != "__main__":
        return module.__name__
    return Path(module.__file__).stem


def why_not_importable(module: ModuleType) -> str | None:
    """Why a rebuild could not import ``module`` by :func:`import_name` safely, or None.

    A rebuild (``cadence resume``, ``cadence.load``) imports the module that defines a
    component; for the calling script that means running its top level again.
    """
    source = Path(getattr(module, "__file__", None) or "")
    if not source.is_file():
        return ("is defined where no file holds it (a notebook, python -c, standard input); define it in a module "
                "or a script file")
    if module.__name__ != "__main__":
        return None
    if source.stem in sys.stdlib_module_names:
        return f"is defined in {source.name}, whose name is that of a standard-library module; rename the script"
    if not _has_main_guard(source):
        return (f"is defined in {source.name}, which has no `if __name__ == \"__main__\":` block: a rebuild imports "
                "the script and would run its training again; put the training under such a block")
    return None


def _has_main_guard(script: Path) -> bool:
    """Whether the script has a top-level ``if __name__ == "__main__":``."""
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            operands = [node.test.left, *node.test.comparators]
            if (any(isinstance(operand, ast.Name) and operand.id == "__name__" for operand in operands)
                    and any(isinstance(operand, ast.Constant) and operand.value == "__main__" for operand in operands)):
                return True
    return False


def modules_of(imports: Iterable[str]) -> dict[str, ModuleType]:
    """The imported modules of a recipe's ``imports:`` (a ``.py`` path is imported under its stem)."""
    modules = {}
    for entry in imports:
        name = Path(entry).stem if entry.endswith(".py") else entry
        if name in sys.modules:
            modules[name] = sys.modules[name]
    return modules


# Trainer arguments kept under another attribute name than their own.
_ATTRIBUTE_OF_ARGUMENT = {"device": "requested_device", "monitor": "monitor_setting", "mode": "mode_setting"}


class _Recipe:
    """Writes a Python-built run as a resolved recipe, section by section, collecting what
    cannot be rebuilt and the user modules the recipe must import."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.modules: dict[str, ModuleType] = {}

    def describe(self, trainer: Trainer, bundle: Any, loaders: dict[str, Any]) -> dict[str, Any]:
        task = self.component("task", trainer.task, TASKS)
        task_arguments = _arguments(trainer.task)
        model = self.component("model", task_arguments.get("model", getattr(trainer.task, "model", None)), MODELS)
        features = self.features(task_arguments.get("features"))
        optimizer = self.component("optimizer", trainer.optimizer, OPTIMIZERS, built_over={"model": trainer.task})
        scheduler = None
        if trainer.scheduler is not None:
            schedule = self.component("scheduler", trainer.scheduler, SCHEDULERS, built_over={"optimizer": trainer.optimizer})
            if schedule is not None:
                # How the trainer steps it is written where a recipe says it: beside the schedule.
                monitor = None if trainer.scheduler_monitor == trainer.monitor else trainer.scheduler_monitor
                name, parameters = schedule.pop("name"), schedule
                scheduler = {"name": name, "interval": trainer.scheduler_interval, "monitor": monitor, **parameters}
        data = self.data(bundle, loaders)
        experiment = trainer.experiment
        return {
            "name": experiment.directory.name,
            "seed": self.seed(bundle),
            "imports": list(self.modules),
            "data": data,
            "features": features,
            "model": model,
            "task": task,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "metrics": [self.component(f"metrics.{index}", item, METRICS) for index, item in enumerate(trainer.metrics)],
            "callbacks": [self.component(f"callbacks.{index}", item, CALLBACKS) for index, item in enumerate(trainer.callbacks)],
            "schedules": {key: value.model_dump(mode="json", exclude_none=True) for key, value in trainer.scheduled.schedules.items()},
            # Weights set up and stages are recipe sections; a Python-built run did its own before fit.
            "initialization": [], "preload": [], "freeze": [], "stages": [],
            "trainer": self.trainer_section(trainer),
            "checkpoint": self.settings("checkpoint", trainer.checkpoint_policy),
            "experiment": {"root": str(experiment.directory.parent), "loggers": self.loggers(experiment)},
        }

    def loggers(self, experiment: Any) -> list[Any]:
        """``experiment.loggers``: tensorboard (the experiment's own writer), then each tracker."""
        first = 1 if experiment.tensorboard_enabled else 0
        trackers = [self.component(f"experiment.loggers.{first + index}", each, LOGGERS) for index, each in enumerate(experiment.loggers)]
        return ["tensorboard"] * first + trackers

    def seed(self, bundle: Any) -> int:
        """The recipe's one seed: the data builder's, which must agree with seed_everything's."""
        data_seed, global_seed = _arguments(bundle).get("seed"), last_seed()
        if data_seed is not None and global_seed is not None and data_seed != global_seed:
            self.problems.append(f"seed: the data builder was given seed={data_seed} and seed_everything({global_seed}); "
                                 "a recipe has one seed for both, so give them the same")
        return next((seed for seed in (data_seed, global_seed) if seed is not None), 0)

    def component(self, path: str, component: Any, registry: Registry, built_over: dict[str, Any] | None = None) -> dict | None:
        """``{"name": ..., **parameters}`` of a registered component, defaults filled in."""
        construction = construction_of(component)
        name = registry.name_of(construction.factory) if construction is not None else None
        if name is None:
            self.problems.append(f"{path} ({type(component).__name__}) {_how_to_register(registry)}")
            return None
        for argument, expected in (built_over or {}).items():
            if construction.arguments.get(argument) is not expected:
                owner = "task" if argument == "model" else argument  # an optimizer's "model" is the whole task
                self.problems.append(f"{path} ({name}) was not made over the trainer's {owner}; give it that: {name}({owner}, ...)")
                return None
        self.add_module(construction.factory)
        parameters = {key: value for key, value in construction.arguments.items() if key not in registry.injected}
        return {"name": name, **self.validated(path, registry.schema(name), parameters)}

    def features(self, features: Any) -> dict | list | None:
        if features is None:
            return None
        stages = getattr(features, "stages", None)  # a FeaturePipeline: a recipe's list of features
        if construction_of(features) is not None or stages is None:
            return self.component("features", features, FEATURES)
        return [self.component(f"features.{index}", stage, FEATURES) for index, stage in enumerate(stages)]

    def data(self, bundle: Any, loaders: dict[str, Any]) -> dict | None:
        if bundle is None:
            self.problems.append(
                f"train data ({type(loaders['train']).__name__}) does not come from a registered data builder; return "
                "your loaders as cadence.registry.DataBundle(train, valid, test) from a function registered with "
                "@DATASETS.register(\"name\") (it is called with work_dir, seed and experiment_dir)"
            )
            return None
        for role in ("valid", "test"):
            if loaders[role] is not getattr(bundle, role):
                self.problems.append(f"fit's {role} data is not the {role} loader of the data builder's bundle; pass that")
        return self.component("data", bundle, DATASETS)

    def trainer_section(self, trainer: Trainer) -> dict | None:
        """The Trainer's arguments, read back from its attributes of the same names."""
        if type(trainer).__module__ != "cadence.trainer":  # a subclass of the user's: a rebuild makes a plain Trainer
            self.problems.append(f"trainer ({type(trainer).__name__}) is a subclass of Trainer, which a rebuild would not use")
            return None
        values = process_settings()
        schema = trainer_section_schema(type(trainer))
        for name in schema.model_fields:
            if name not in values:
                # The device as it was asked for ("auto" stays "auto"), not the one it became here;
                # the monitor and mode as given (with their tie-breakers).
                value = getattr(trainer, _ATTRIBUTE_OF_ARGUMENT.get(name, name), _MISSING)
                if value is _MISSING:
                    self.problems.append(f"trainer: its argument '{name}' is not kept as an attribute of that name")
                    return None
                values[name] = str(value) if isinstance(value, torch.device) else value
        return self.validated("trainer", schema, values)

    def settings(self, path: str, settings: Any) -> dict | None:
        """A section whose schema is the signature of the settings object's own class."""
        schema = settings_section_schema(type(settings))
        return self.validated(path, schema, {name: getattr(settings, name) for name in schema.model_fields})

    def validated(self, path: str, schema: type[pydantic.BaseModel], parameters: dict[str, Any]) -> dict[str, Any]:
        """The parameters, checked against the schema, as JSON values (what config.yaml holds)."""
        try:
            return schema.model_validate(parameters).model_dump(mode="json")
        except (pydantic.ValidationError, pydantic.PydanticSerializationError) as error:
            first = str(error).splitlines()[0] if isinstance(error, pydantic.PydanticSerializationError) else (
                "; ".join(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}" for problem in error.errors()))
            self.problems.append(f"{path}: its arguments cannot be written as a config ({first})")
            return {}

    def add_module(self, factory: Any) -> None:
        """Remember the user module that defines ``factory`` (cadence's own need no import)."""
        module = sys.modules.get(getattr(factory, "__module__", ""))
        if module is None or module.__name__ == "cadence" or module.__name__.startswith("cadence."):
            return
        problem = why_not_importable(module)
        if problem is not None:
            self.problems.append(f"{getattr(factory, '__qualname__', factory)} {problem}")
            return
        name = import_name(module)
        # A rebuild in this same process imports the script by its stem: let that find the
        # running script, rather than execute it again (and register its components twice).
        sys.modules.setdefault(name, module)
        self.modules[name] = module


_MISSING = object()


def _arguments(component: Any) -> dict[str, Any]:
    construction = construction_of(component)
    return construction.arguments if construction is not None else {}


def _how_to_register(registry: Registry) -> str:
    if registry is OPTIMIZERS:
        return ("was not made by a registered optimizer factory; make it with one, e.g. cadence.optim.adamw(task, lr=...), "
                "or register yours with @OPTIMIZERS.register(\"name\")")
    if registry is SCHEDULERS:
        return ("was not made by a registered schedule factory; make it with one, e.g. cadence.optim.exponential(optimizer, "
                "gamma=...), or register yours with @SCHEDULERS.register(\"name\")")
    return (f"is not a registered {registry.kind}; register its class with @{registry.variable}.register(\"name\") in a "
            f"module of yours (from cadence.registry import {registry.variable})")
