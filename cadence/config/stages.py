"""Stages: epoch ranges of one run, each with its own model, task, optimizer, schedule and
scheduled values (RETURNN's pretraining and ``get_network(epoch)`` pipelines).

A recipe lists them under ``stages:``; each stage is the recipe with its ``overrides`` (dotted
keys, as on the command line) applied::

    stages:
      - {epochs: 2, overrides: {model.rnn_layers: 1}}
      - {epochs: 2, overrides: {model.rnn_layers: 2}}
      - {overrides: {model.rnn_layers: 3}}          # the last runs to trainer.max_epochs

A stage may override ``model``, ``task`` (losses and their weights), ``optimizer``,
``scheduler``, ``schedules`` and ``freeze`` (which parameters train); the data, features, metrics, callbacks and trainer stay the
recipe's (a value that changes by epoch is a schedule). A stage that names another component
(``task.name: framewise``) starts that section afresh: only the stage's own keys of it apply. ``function`` names a
``STAGE_FUNCTIONS`` entry, ``fn(epoch, trainer) -> overrides``, called when the stage starts
(for a pipeline that computes something between stages); what it returns is saved in the
checkpoints, so a resumed run does not call it again.

When a stage starts, its task is built and the previous task's tensors are carried over by
:func:`cadence.models.growth.grow_into` (copied, grown into the leading block, or new; the
copy is logged). The optimizer is built anew; its state (moments) is kept when no tensor
changed shape and the optimizer section is the same. The learning-rate schedule keeps its
state (a ``phases`` schedule's history and phase) when the scheduler section is the same.
Every stage's recipe is resolved with the recipe, so a mistake in any stage fails before the
first epoch. The stage index is part of each checkpoint (``stages``): a run resumed inside a
stage rebuilds that stage's objects before loading their state, so resume is exact.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

from cadence.config.schema import RecipeConfig, StageConfig, set_key, validate_recipe
from cadence.errors import ConfigError
from cadence.models.growth import grow_into
from cadence.optim.control import LearningRateSchedule
from cadence.registry import STAGE_FUNCTIONS
from cadence.runtime.logs import get_logger

__all__ = ["STAGEABLE", "StagePlan", "checkpoint_stage", "stage_recipe", "stage_starts"]

STAGEABLE = ("model", "task", "optimizer", "scheduler", "schedules", "freeze")


def stage_recipe(recipe: dict[str, Any], stage: StageConfig, index: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe (a dict) as stage ``index`` runs it: its overrides (and ``extra``, a stage
    function's) applied, no stages of its own."""
    derived = copy.deepcopy(recipe)
    derived["stages"] = []
    overrides = {**stage.overrides, **(extra or {})}
    for section in ("model", "task", "optimizer", "scheduler"):
        # Another component starts its section afresh: the recipe's settings were for the other one,
        # and a resumed run's saved config spells out all of them (every default too), so keeping
        # them would make a resumed stage differ from the same stage in an uninterrupted run.
        renamed = overrides.get(f"{section}.name")
        if renamed is not None and isinstance(derived.get(section), dict) and derived[section].get("name") != renamed:
            derived[section] = {}
    for key, value in overrides.items():
        where = f"stages.{index}.overrides.{key}"
        section, _, rest = key.partition(".")
        if section not in STAGEABLE:
            raise ConfigError(f"{where}: a stage may override {', '.join(STAGEABLE)}; the data, features, metrics, "
                              "callbacks and trainer stay the recipe's (a value that changes by epoch is a schedule)")
        if section == "schedules" and rest:  # a setting's name has dots of its own: schedules.trainer.clip_grad_norm
            derived.setdefault("schedules", {})[rest] = value
        else:
            set_key(derived, key.split("."), copy.deepcopy(value), where)
    return derived


def stage_starts(stages: list[StageConfig], max_epochs: int) -> list[int]:
    """The 0-based epoch each stage starts at; refuses stages that could never start."""
    starts, epoch = [], 0
    for index, stage in enumerate(stages):
        if stage.epochs is None and index < len(stages) - 1:
            raise ConfigError(f"stages.{index}.epochs: only the last stage may leave out its epochs (it runs to the end)")
        if epoch >= max_epochs:
            raise ConfigError(f"stages.{index}: starts at epoch {epoch + 1}, after trainer.max_epochs={max_epochs}: "
                              "it would never run; shorten the stages before it or raise max_epochs")
        starts.append(epoch)
        epoch += stage.epochs or 0
    return starts


def resolve_stages(config: RecipeConfig, resolve_one) -> list:
    """Every stage's recipe resolved (``resolve_one``: :func:`cadence.config.resolve.resolve`),
    each error prefixed with its stage."""
    base = config.model_dump(mode="json")
    resolved = []
    for index, stage in enumerate(config.stages):
        if stage.function is not None:
            STAGE_FUNCTIONS.get(stage.function, f"stages.{index}.function")  # a typo fails now, not epochs later
        try:
            resolved.append(resolve_one(validate_recipe(stage_recipe(base, stage, index))))
        except ConfigError as error:
            message = str(error)
            raise ConfigError(message if message.startswith(f"stages.{index}") else f"stages.{index}: {message}") from None
    return resolved


def resolved_stage(recipe: Any, index: int, function_overrides: dict[str, Any] | None, resolve_one: Callable) -> Any:
    """Stage ``index`` of the resolved ``recipe``, with what its function returned, if anything."""
    if not function_overrides:
        return recipe.stages[index]
    stage = recipe.config.stages[index]
    try:
        return resolve_one(validate_recipe(stage_recipe(recipe.config.model_dump(mode="json"), stage, index, function_overrides)))
    except ConfigError as error:
        raise ConfigError(f"stages.{index}.function ({stage.function}) returned overrides that do not work: {error}") from None


def checkpoint_stage(recipe: Any, state: dict[str, Any] | None, resolve_one: Callable) -> Any:
    """The resolved recipe a checkpoint's task was built from: its stage's, for a recipe with stages."""
    if not recipe.stages:
        return recipe
    saved = state if isinstance(state, dict) else {"index": 0}
    index = saved.get("index")
    if not isinstance(index, int) or not 0 <= index < len(recipe.stages):
        raise ValueError(f"the checkpoint's stage {index!r} is not one of the recipe's {len(recipe.stages)} stages")
    return resolved_stage(recipe, index, (saved.get("function_overrides") or {}).get(str(index)), resolve_one)


class StagePlan:
    """The Trainer's stages: :meth:`at_epoch_start` switches at a boundary, :meth:`restore`
    rebuilds a checkpoint's stage before its state is loaded."""

    def __init__(self, recipe: Any, facts: dict[str, Any], build_objects: Callable, resolve_one: Callable):
        self.recipe = recipe  # the ResolvedRecipe, with .stages
        self.facts = facts
        self.build_objects = build_objects  # resolved stage recipe, facts -> (task, optimizer, scheduler)
        self.resolve = resolve_one
        self.starts = stage_starts(recipe.config.stages, recipe.trainer["max_epochs"])
        self.index = 0
        self.function_overrides: dict[int, dict[str, Any]] = {}  # what each stage's function returned
        self.logger = get_logger()

    def stage_at(self, epoch: int) -> int:
        return max(index for index, start in enumerate(self.starts) if start <= epoch)

    def at_epoch_start(self, trainer: Any) -> None:
        index = self.stage_at(trainer.state.epoch)
        if index != self.index:
            self.enter(trainer, index, carry=True)

    def restore(self, trainer: Any, state: dict[str, Any] | None) -> None:
        """Build the stage a checkpoint was saved in (its state is loaded next)."""
        if state is None:
            return
        index, overrides = state.get("index"), state.get("function_overrides", {})
        if not isinstance(index, int) or not 0 <= index < len(self.starts) or not isinstance(overrides, dict):
            raise ValueError(f"the saved stage {index!r} is not one of this recipe's {len(self.starts)} stages")
        self.function_overrides = {int(key): value for key, value in overrides.items()}
        if index != self.index:
            self.enter(trainer, index, carry=False)

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index, "function_overrides": {str(key): value for key, value in self.function_overrides.items()}}

    def resolved(self, index: int) -> Any:
        return resolved_stage(self.recipe, index, self.function_overrides.get(index), self.resolve)

    def enter(self, trainer: Any, index: int, carry: bool) -> None:
        """Switch ``trainer`` to stage ``index``; ``carry``: copy the previous stage's tensors
        (a boundary in training) rather than leave them for a checkpoint to fill."""
        stage = self.recipe.config.stages[index]
        if carry and stage.function is not None and index not in self.function_overrides:
            function = STAGE_FUNCTIONS.get(stage.function, f"stages.{index}.function")
            overrides = function(trainer.state.epoch + 1, trainer)
            try:
                self.function_overrides[index] = json.loads(json.dumps(dict(overrides or {}), allow_nan=False))
            except (TypeError, ValueError) as error:
                raise ConfigError(f"stages.{index}.function ({stage.function}) must return a dict of JSON values: {error}") from None
        recipe = self.resolved(index)
        task, optimizer, scheduler = self.build_objects(recipe, self.facts)
        if carry:
            report = grow_into(trainer.task.state_dict(), task, fill=stage.grown_parts)
            now, before = recipe.to_dict(), self.resolved(self.index).to_dict()
            same_optimizer = now["optimizer"] == before["optimizer"]
            if same_optimizer and not report.dropped and all(action == "copied" for action in report.actions.values()):
                optimizer.load_state_dict(trainer.optimizer.state_dict())  # no tensor changed shape: the moments fit
            # A phases schedule scales whatever optimizer.lr is; a PyTorch one holds the old base rates.
            same_schedule = now["scheduler"] == before["scheduler"] and (isinstance(scheduler, LearningRateSchedule) or same_optimizer)
            if scheduler is not None and trainer.scheduler is not None and same_schedule:
                scheduler.load_state_dict(trainer.scheduler.state_dict())
            self.logger.info("stage %d of %d starts at epoch %d: %s", index + 1, len(self.starts), trainer.state.epoch + 1,
                             report.summary().replace("\n", "; "))
        trainer.replace_task(task, optimizer, scheduler, recipe.config.schedules)
        self.index = index
