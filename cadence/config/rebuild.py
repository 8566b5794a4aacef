"""Rebuilding components from a checkpoint: its config (by registered names) plus its state.

- :func:`load`: the task (features + model) of a checkpoint, ready for inference.
- :func:`trainer_from_checkpoint`: data, model, optimizer, schedule, metrics, callbacks and
  Trainer rebuilt from the saved config, with every state restored when ``fit`` starts.

Both work on any run whose checkpoints hold a config: a recipe run, or a run built in Python
from registered components (see :mod:`cadence.run_record`).

A checkpoint is read only after its manifest verifies, and nothing in it is unpickled. A
folder you were given runs no code of its own: user components listed under ``imports:`` are
imported from the experiment's ``code/modules`` snapshot only with ``trust_code=True``
(``--trust-code`` on the command line); without it, only modules installed in your environment
are imported (a Python-built run lists the modules that define its components, its own script
included). A checkpoint that verifies but does not fit the model its config builds is skipped
(a folder) or refused (a checkpoint named alone), saying what did not fit.

Example::

    task = cadence.load("runs/fsdd-digits/20261121-101500")   # the best valid checkpoint
    task = cadence.load("downloaded/run", trust_code=True)     # after reading its code/ folder
    logits = task.logits(batch)[0]
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import site
import sys
import sysconfig
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cadence.checkpoint.candidates import use_first_that_fits
from cadence.checkpoint.checkpointer import find_checkpoint
from cadence.checkpoint.format import load_checkpoint
from cadence.checkpoint.snapshot import load_module_state
from cadence.config.build import build, build_task
from cadence.config.resolve import ResolvedRecipe, resolve
from cadence.config.schema import RecipeConfig, validate_recipe
from cadence.config.stages import checkpoint_stage
from cadence.data.tokenizers import tokenizer_from_dict
from cadence.errors import CheckpointError, ConfigError
from cadence.experiment import Experiment
from cadence.trainer import Trainer

__all__ = ["import_saved_modules", "load", "rebuilt_task", "saved_config", "trainer_from_checkpoint"]


def import_saved_modules(imports: list[str], experiment_directory: Path, trust_code: bool = False) -> None:
    """Import the user modules a saved run's ``imports:`` name, as far as the user trusts it.

    A folder someone gave you (a downloaded experiment, a colleague's checkpoint) may hold
    Python code; importing it runs it. So without ``trust_code`` only modules this process
    has already imported, or that the environment provides by name (an installed package,
    found outside ``experiment_directory``), are imported; any other is refused with one line
    naming the modules and the flag. With ``trust_code`` the run's code snapshot
    (``code/modules``) goes on the import path and is imported, as the run was built.
    """
    experiment_directory = Path(experiment_directory)
    modules = experiment_directory / "code" / "modules"
    names = [Path(entry).stem if entry.endswith(".py") else entry for entry in imports]
    if not trust_code:
        untrusted = [entry for entry, name in zip(imports, names) if not _importable_without_the_folder(entry, name, experiment_directory)]
        if untrusted:
            listed = ", ".join(untrusted)
            raise ConfigError(
                f"{experiment_directory}: its config imports code that is not installed here ({listed}); cadence runs "
                f"no code from a folder it was given unless you trust it: read {modules}, then pass --trust-code "
                "(trust_code=True in Python), or install the module(s)"
            )
    elif modules.is_dir() and str(modules) not in sys.path:
        sys.path.insert(0, str(modules))
    for index, (entry, name) in enumerate(zip(imports, names)):
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"imports.{index}: cannot import '{entry}' for this checkpoint ({error}); the experiment's "
                f"code/modules snapshot does not have it, so put it on PYTHONPATH"
            ) from error


def _importable_without_the_folder(entry: str, name: str, experiment_directory: Path) -> bool:
    """Whether importing ``name`` runs only code the user already has: it is imported already, or
    its top-level package is installed (a distribution, editable ones included) or lies under a
    ``PYTHONPATH`` folder of the user's. Never code in or around the experiment folder, in the
    current folder (``python -m`` puts it on the path), or the standard library (whose
    ``__main__`` modules and demos act when imported). A ``.py`` path is the folder's own code."""
    if name in sys.modules:
        return True
    parts = name.split(".")
    if entry.endswith(".py") or "__main__" in parts or parts[0] in sys.stdlib_module_names:
        return False
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: finding it imports nothing
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None or not spec.has_location:
        return False  # not found, or a namespace package: any folder on the path could add to it
    # A package's folder, or a module's file: neither may hold the experiment folder or lie in it
    # (a package holding it could import the folder's code as one of its submodules).
    location = Path(spec.origin).resolve()
    location = location.parent if spec.submodule_search_locations is not None else location
    folder = experiment_directory.resolve()
    if location.is_relative_to(folder) or folder.is_relative_to(location) or location.parent == Path.cwd().resolve():
        return False
    installed = parts[0] in importlib.metadata.packages_distributions()
    return installed or any(location.is_relative_to(trusted) for trusted in _user_code_folders())


def _user_code_folders() -> list[Path]:
    """Folders of the user's own code: installed packages and ``PYTHONPATH`` entries."""
    folders = [sysconfig.get_paths()[key] for key in ("purelib", "platlib")]
    folders += site.getsitepackages() + [site.getusersitepackages()]
    folders += [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return [Path(folder).resolve() for folder in folders]


def saved_config(state: dict[str, Any], path: Path, trust_code: bool = False) -> RecipeConfig:
    """The recipe a checkpoint was built from, validated again, with its user modules imported
    as far as the user trusts the folder (:func:`import_saved_modules`)."""
    config = state.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the checkpoint holds no config, so its components cannot be rebuilt; "
                              "load its 'task' state into a model you build yourself")
    recipe = validate_recipe(config)
    experiment_directory = path.parent.parent  # EXP_DIR/checkpoints/<name>
    import_saved_modules(recipe.imports, experiment_directory, trust_code)
    return recipe


def rebuilt_task(recipe: ResolvedRecipe, state: dict[str, Any], facts: dict[str, Any]) -> nn.Module:
    """The task (features and model) a checkpoint's resolved ``recipe`` builds with ``facts``,
    the checkpoint's ``state`` loaded into it. A state that does not fit is a
    :class:`CheckpointError` saying what did not fit."""
    try:
        recipe = checkpoint_stage(recipe, state.get("stages"), resolve)  # with stages: the one it was saved in
    except ValueError as error:
        raise CheckpointError(str(error)) from error
    task = build_task(recipe, facts=facts)
    load_module_state(task, state.get("task"), "task")
    task.config = state["config"]
    return task


def _saved_tokenizer(saved: Any) -> Any:
    try:
        return tokenizer_from_dict(saved)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"its tokenizer cannot be read ({type(error).__name__}: {error})") from error


def load(checkpoint: str | Path, device: str | torch.device = "cpu", trust_code: bool = False) -> nn.Module:
    """The task (features and model) saved in ``checkpoint``, in eval mode on ``device``.

    ``checkpoint``: a checkpoint folder, or an experiment folder (its best valid checkpoint by
    the run's monitored value, the model the run tested; the newest when none has a value; a
    checkpoint that does not fit the model its config builds is skipped with a warning).
    The resolved config already holds every fact the data supplied (classes, rate), and a
    text task's tokenizer is in the checkpoint, so no data is read. The returned module has a
    ``config`` attribute with the resolved config. ``trust_code``: import the user modules the
    config names from the folder's code snapshot (see :func:`import_saved_modules`).
    """
    def rebuild(path: Path, state: dict[str, Any], _: dict[str, Any]) -> nn.Module:
        recipe = resolve(saved_config(state, path, trust_code))
        saved = state.get("tokenizer")
        return rebuilt_task(recipe, state, {"tokenizer": _saved_tokenizer(saved)} if saved is not None else {})

    _, task = use_first_that_fits(checkpoint, rebuild, best=True)
    return task.to(device).eval()


def trainer_from_checkpoint(checkpoint: str | Path, experiment: Experiment | None = None, trust_code: bool = False) -> Trainer:
    """A Trainer rebuilt from the checkpoint's config, which resumes it when ``fit()`` starts.

    The data set is built again (``trainer.data``), so ``trainer.fit()`` needs no arguments.
    ``trust_code``: as for :func:`load`.
    """
    path = find_checkpoint(checkpoint)
    state, _ = load_checkpoint(path)
    # Without an experiment, data files (manifests) go to the run's own data/ folder again.
    work_dir = None if experiment is not None else path.parent.parent / "data"
    built = build(resolve(saved_config(state, path, trust_code)), experiment, work_dir=work_dir, from_scratch=False)
    trainer = built.trainer
    trainer.data = built.data
    # The folder, when one was given: fit then resumes from its newest checkpoint that fits.
    trainer.pending_resume = Path(checkpoint)
    return trainer
