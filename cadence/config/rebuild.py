"""Rebuilding components from a checkpoint: its config (by registered names) plus its state.

- :func:`load`: the task (features + model) of a checkpoint, ready for inference.
- :func:`trainer_from_checkpoint`: data, model, optimizer, schedule, metrics, callbacks and
  Trainer rebuilt from the saved config, with every state restored when ``fit`` starts.

Both work on any run whose checkpoints hold a config: a recipe run, or a run built in Python
from registered components (see :mod:`cadence.run_record`).

A checkpoint is read only after its manifest verifies, and nothing in it is unpickled.
User components listed under ``imports:`` are imported from the experiment's ``code/modules``
snapshot when the checkpoint lives in an experiment folder (a Python-built run lists the
modules that define its components, its own script included).

Example::

    task = cadence.load("runs/fsdd-digits/20261121-101500")   # the best valid checkpoint
    logits = task.logits(batch)[0]
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cadence.checkpoint.checkpointer import find_best_checkpoint, find_checkpoint
from cadence.checkpoint.format import load_checkpoint
from cadence.config.build import build, build_task
from cadence.config.resolve import resolve
from cadence.config.schema import RecipeConfig, validate_recipe
from cadence.data.tokenizers import tokenizer_from_dict
from cadence.errors import CheckpointError, ConfigError
from cadence.experiment import Experiment
from cadence.trainer import Trainer

__all__ = ["import_saved_modules", "load", "saved_config", "trainer_from_checkpoint"]


def import_saved_modules(imports: list[str], code_directory: Path) -> None:
    """Import a run's ``imports:`` from its code snapshot (``code/modules``), else from the path."""
    modules = code_directory / "modules"
    if modules.is_dir() and str(modules) not in sys.path:
        sys.path.insert(0, str(modules))
    for index, entry in enumerate(imports):
        name = Path(entry).stem if entry.endswith(".py") else entry
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"imports.{index}: cannot import '{entry}' for this checkpoint ({error}); the experiment's "
                f"code/modules snapshot does not have it, so put it on PYTHONPATH"
            ) from error


def saved_config(state: dict[str, Any], path: Path) -> RecipeConfig:
    """The recipe a checkpoint was built from, validated again (and its user modules imported)."""
    config = state.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the checkpoint holds no config, so its components cannot be rebuilt; "
                              "load its 'task' state into a model you build yourself")
    recipe = validate_recipe(config)
    experiment_directory = path.parent.parent  # EXP_DIR/checkpoints/<name>
    import_saved_modules(recipe.imports, experiment_directory / "code")
    return recipe


def load(checkpoint: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The task (features and model) saved in ``checkpoint``, in eval mode on ``device``.

    ``checkpoint``: a checkpoint folder, or an experiment folder (its best valid checkpoint by
    the run's monitored value, the model the run tested; the newest when none has a value).
    The resolved config already holds every fact the data supplied (classes, rate), and a
    text task's tokenizer is in the checkpoint, so no data is read. The returned module has a
    ``config`` attribute with the resolved config.
    """
    path = find_best_checkpoint(checkpoint)
    state, _ = load_checkpoint(path)
    recipe = saved_config(state, path)
    facts = {}
    if state.get("tokenizer") is not None:
        facts["tokenizer"] = tokenizer_from_dict(state["tokenizer"])
    task = build_task(resolve(recipe), facts=facts)
    task.load_state_dict(state["task"])
    task.config = state["config"]
    return task.to(device).eval()


def trainer_from_checkpoint(checkpoint: str | Path, experiment: Experiment | None = None) -> Trainer:
    """A Trainer rebuilt from the checkpoint's config, which resumes it when ``fit()`` starts.

    The data set is built again (``trainer.data``), so ``trainer.fit()`` needs no arguments.
    """
    path = find_checkpoint(checkpoint)
    state, _ = load_checkpoint(path)
    # Without an experiment, data files (manifests) go to the run's own data/ folder again.
    work_dir = None if experiment is not None else path.parent.parent / "data"
    built = build(resolve(saved_config(state, path)), experiment, work_dir=work_dir)
    trainer = built.trainer
    trainer.data = built.data
    trainer.pending_resume = path
    return trainer
