"""Running a recipe end to end: validate, create the experiment, build, fit.

What the run leaves in its folder (config.yaml and its hash, provenance.json, code/,
results.json) is written by the Trainer's ``fit`` (:mod:`cadence.run_record`), as for a
run built in Python: this module only says which recipe the run came from.

Started by ``torchrun`` (several processes), every process runs the same command: rank 0
chooses the folder and is the only one to write it; the others build the same run in a
scratch folder of their own (its manifests, tokenizer and statistics), which goes when they end.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cadence.checkpoint.checkpointer import Checkpointer, find_checkpoint
from cadence.checkpoint.format import load_checkpoint
from cadence.checkpoint.rng import seed_everything
from cadence.config.build import build, build_loggers, import_user_modules
from cadence.config.rebuild import import_saved_modules
from cadence.config.resolve import ResolvedRecipe, resolve
from cadence.config.schema import RecipeConfig, apply_overrides, load_recipe, load_yaml, validate_recipe
from cadence.errors import CadenceError, CheckpointError, ConfigError, TrainingInterrupted
from cadence.experiment import Experiment, unique_directory
from cadence.runtime.distributed import broadcast_object, distributed_rank_and_size, init_from_environment, is_main_process
from cadence.runtime.files import to_yaml
from cadence.runtime.logs import get_logger, setup_console_logging
from cadence.runtime.process import apply_process_settings


def prepare_run(recipe: ResolvedRecipe) -> None:
    """Process-wide settings a recipe asks for, applied before anything random happens."""
    apply_process_settings(**recipe.process_settings())
    seed_everything(recipe.config.seed)


def experiment_directory(config: RecipeConfig, exp_dir: str | Path | None) -> Path:
    if exp_dir is None:
        return unique_directory(config.experiment.root, config.name)
    directory = Path(exp_dir)
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"--exp-dir {directory}: the folder exists and is not empty; give a new folder so no earlier run is overwritten")
    return directory


def outermost_missing(directory: Path) -> Path | None:
    """The outermost of ``directory`` and its parents that does not exist yet (None: it exists)."""
    missing = None
    for folder in (directory, *directory.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def train_recipe(recipe: str | Path, overrides: list[str] = (), exp_dir: str | Path | None = None) -> dict[str, Any]:
    """``cadence train``: returns the results written to ``EXP_DIR/results.json``."""
    init_from_environment()  # several processes when started by torchrun
    recipe = Path(recipe)
    config = load_recipe(recipe, list(overrides))
    import_user_modules(config.imports, recipe.resolve().parent)
    resolved = resolve(config)  # every key checked, once, before any folder is created
    logger = setup_console_logging(logging.INFO if is_main_process() else logging.WARNING)
    restarted = restarted_in(exp_dir)
    if restarted:  # torchrun restarted the processes (--max-restarts): go on from the folder's checkpoint
        logger.warning("restarted by torchrun: resuming %s", exp_dir)
        return resume_experiment(exp_dir, overrides)
    if not is_main_process():
        return train_beside_rank_zero(resolved, broadcast_object(None))
    directory = experiment_directory(config, exp_dir)
    broadcast_object(str(directory))
    created = outermost_missing(directory)  # what to remove if the run fails before it trains
    prepare_run(resolved)
    experiment = None
    try:
        experiment = Experiment(directory, tensorboard=config.experiment.uses_tensorboard, entry_point=recipe,
                                loggers=build_loggers(resolved))
        built = build(resolved, experiment)
    except BaseException:
        # Nothing was trained (a component refused its values, the disk is full, Ctrl-C):
        # leave no half-made experiment folder behind.
        remove_unfinished(experiment, directory, created)
        raise
    try:
        logger.info("experiment %s", experiment.directory)
        return built.trainer.fit(built.data.train, built.data.valid, built.data.test)
    except CadenceError as error:
        if built.trainer.state.global_step == 0 and not isinstance(error, TrainingInterrupted):
            # Refused before the first step (a model that cannot take the features): nothing trained.
            remove_unfinished(experiment, directory, created)
        raise
    finally:
        experiment.stop()


def restarted_in(exp_dir: str | Path | None) -> bool:
    """Whether torchrun restarted this command (``TORCHELASTIC_RESTART_COUNT`` > 0) after it had
    saved a checkpoint in ``--exp-dir``: then the run resumes there. A restart without one
    starts again (a folder left without a checkpoint is set aside as ``EXP_DIR.unfinished-N``);
    without ``--exp-dir`` it cannot find the first run's folder and says so. Decided by rank 0."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
        return False
    if exp_dir is None:
        get_logger().warning("restarted by torchrun without --exp-dir: starting again in a new folder; pass --exp-dir "
                             "so that a restart resumes the run")
        return False
    if not is_main_process():
        return bool(broadcast_object(None))
    directory = Path(exp_dir)
    if (directory / "checkpoints").is_dir():
        Checkpointer(directory / "checkpoints").clean_temporary()  # puts back one set aside by a killed save
    resumable = (directory / "config.yaml").is_file() and any_checkpoint(directory / "checkpoints")
    if directory.exists() and any(directory.iterdir()) and not resumable:
        aside = next(candidate for number in itertools.count(1)
                     if not (candidate := directory.with_name(f"{directory.name}.unfinished-{number}")).exists())
        directory.rename(aside)
        get_logger().warning("restarted by torchrun before the first checkpoint: %s set aside as %s", directory, aside)
    return bool(broadcast_object(resumable))


def any_checkpoint(folder: Path) -> bool:
    try:
        find_checkpoint(folder)
    except CheckpointError:
        return False
    return True


def train_beside_rank_zero(resolved: ResolvedRecipe, directory: str, resume: bool = False) -> dict[str, Any]:
    """A process other than rank 0: the same run, built in a scratch folder, trained on its share
    of the batches; it writes nothing in the experiment folder (rank 0's, ``directory``). When
    resuming, it loads the checkpoint rank 0 chose there."""
    rank, _ = distributed_rank_and_size()
    prepare_run(resolved)
    with tempfile.TemporaryDirectory(prefix=f"cadence-rank{rank}-") as scratch:
        built = build(resolved, None, work_dir=Path(scratch), from_scratch=not resume)
        data = built.data
        return built.trainer.fit(data.train, data.valid, data.test, resume_from=directory if resume else None)


def remove_unfinished(experiment: Experiment | None, directory: Path, created: Path | None) -> None:
    """Remove the folder of a run that failed before it trained anything, and the empty parents
    it created (never a parent another run has written into meanwhile)."""
    try:
        if experiment is not None:
            experiment.stop()
    except CadenceError:
        pass  # the error that ended the run says what went wrong; the folder goes anyway
    finally:
        if created is not None:
            shutil.rmtree(directory, ignore_errors=True)
            for parent in directory.parents:
                if not parent.is_relative_to(created):
                    break
                try:
                    parent.rmdir()  # only when empty
                except OSError:
                    break


# Settings that change how a run is watched or how long it goes, never what it computes:
# changing them at resume keeps the result exact.
RESUME_SAFE_KEYS = (
    "trainer.max_epochs", "trainer.max_steps", "trainer.progress_bar", "trainer.log_every",
    "data.num_workers", "experiment.tensorboard", "experiment.loggers", "checkpoint.",
)


def config_diff(saved: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted.key, saved value, new value)`` for every leaf that differs (missing = None)."""
    if isinstance(saved, dict) and isinstance(new, dict):
        return [change for key in dict.fromkeys([*saved, *new])
                for change in config_diff(saved.get(key), new.get(key), f"{path}.{key}" if path else str(key))]
    if isinstance(saved, list) and isinstance(new, list) and len(saved) == len(new):
        return [change for index, (one, other) in enumerate(zip(saved, new)) for change in config_diff(one, other, f"{path}.{index}")]
    return [] if saved == new else [(path, saved, new)]


def resume_experiment(
    directory: str | Path, overrides: list[str] = (), checkpoint: str | Path | None = None, allow_config_change: bool = False,
    trust_code: bool = False,
) -> dict[str, Any]:
    """``cadence resume``: continue a run in its own folder from its newest valid checkpoint.

    Overrides are compared with the config of the checkpoint resumed from: changes outside
    :data:`RESUME_SAFE_KEYS` would make the result differ from an uninterrupted run, so they
    are refused unless ``allow_config_change``; every resume and its changes are recorded in
    provenance.json. ``trust_code``: import the user modules the config names from the
    folder's code snapshot (see :func:`cadence.config.rebuild.import_saved_modules`).
    """
    init_from_environment()  # several processes when started by torchrun
    directory = Path(directory)
    if not is_main_process():
        # Rank 0 checks the folder and the overrides; this process builds the config it sends.
        config = validate_recipe(broadcast_object(None))
        import_saved_modules(config.imports, directory, trust_code)
        setup_console_logging(logging.WARNING)
        return train_beside_rank_zero(resolve(config), str(directory), resume=True)
    load_yaml(directory / "config.yaml")  # the folder's own record must be sound (safe loader: no Python tags)
    Checkpointer(directory / "checkpoints").clean_temporary()  # may restore one set aside by a killed save
    start = find_checkpoint(checkpoint or directory)  # fail before anything is built
    saved = load_checkpoint(start)[0].get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{start}: the checkpoint holds no config; resume it from Python with Trainer.fit(resume_from=...)")
    continued = apply_overrides(saved, list(overrides))
    changes = config_diff(saved, continued)
    unsafe = [change for change in changes if not change[0].startswith(RESUME_SAFE_KEYS)]
    described = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)
    if unsafe and not allow_config_change:
        raise ConfigError(
            f"resuming {directory} with changes that break exact continuation ({described}); "
            "pass --allow-config-change to accept them (they are recorded in provenance.json)"
        )
    config = validate_recipe(continued)
    broadcast_object(continued)  # the config the other processes build
    import_saved_modules(config.imports, directory, trust_code)
    resolved = resolve(config)
    logger = setup_console_logging()
    prepare_run(resolved)
    # The resume is recorded in provenance.json (by fit), with what this command changed.
    notes = {
        "overrides": list(overrides), "changes": [{"key": key, "saved": old, "new": new} for key, old, new in changes],
        "exact": not unsafe,
    }
    experiment = Experiment(directory, tensorboard=config.experiment.uses_tensorboard, notes=notes, loggers=build_loggers(resolved))
    try:
        built = build(resolved, experiment, from_scratch=False)
        logger.info("resuming experiment %s from %s%s", directory, start, f" with changes: {described}" if changes else "")
        # The folder, unless --from named a checkpoint: a newest one that does not fit is skipped.
        return built.trainer.fit(built.data.train, built.data.valid, built.data.test, resume_from=checkpoint or directory)
    finally:
        experiment.stop()


def print_config(recipe: str | Path, overrides: list[str] = ()) -> str:
    recipe = Path(recipe)
    config = load_recipe(recipe, list(overrides))
    import_user_modules(config.imports, recipe.resolve().parent)
    return to_yaml(resolve(config).to_dict())
