"""Running a recipe end to end: validate, create the experiment, build, fit, record."""

from __future__ import annotations

import datetime
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from cadence.config.build import Built, build, import_user_modules, resolve
from cadence.checkpoint.checkpointer import Checkpointer
from cadence.checkpoint.format import load_checkpoint
from cadence.checkpoint.checkpointer import find_checkpoint
from cadence.config.schema import RecipeConfig, apply_overrides, config_hash, load_recipe, load_yaml, to_yaml, validate_recipe
from cadence.errors import CadenceError, CheckpointError, ConfigError
from cadence.experiment import Experiment, unique_directory
from cadence.runtime.logs import setup_console_logging
from cadence.runtime.provenance import collect_provenance, snapshot_code
from cadence.checkpoint.rng import seed_everything
from cadence.config.rebuild import import_saved_modules


def prepare_run(config: RecipeConfig) -> None:
    """Process-wide settings a recipe asks for, applied before anything random happens."""
    if config.trainer.num_threads is not None:
        torch.set_num_threads(config.trainer.num_threads)
    if config.trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_everything(config.seed)


def experiment_directory(config: RecipeConfig, exp_dir: str | Path | None) -> Path:
    if exp_dir is None:
        return unique_directory(config.experiment.root, config.name)
    directory = Path(exp_dir)
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"--exp-dir {directory}: the folder exists and is not empty; give a new folder so no earlier run is overwritten")
    return directory


def train_recipe(recipe: str | Path, overrides: list[str] = (), exp_dir: str | Path | None = None) -> dict[str, Any]:
    """``cadence train``: returns the results written to ``EXP_DIR/results.json``."""
    recipe = Path(recipe)
    config = load_recipe(recipe, list(overrides))
    modules = import_user_modules(config.imports, recipe.resolve().parent)
    resolve(config)  # every key checked before any folder is created
    logger = setup_console_logging()
    directory = experiment_directory(config, exp_dir)
    created = not directory.exists()
    prepare_run(config)
    experiment = Experiment(directory, tensorboard=config.experiment.tensorboard)
    try:
        try:
            built = build(config, experiment)
        except CadenceError:
            # Nothing was trained: leave no half-made experiment folder behind.
            experiment.stop()
            if created:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        logger.info("experiment %s", experiment.directory)
        digest = config_hash(built.resolved)
        experiment.write_text("config.yaml", to_yaml(built.resolved))
        experiment.write_text("config.sha256", digest + "\n")
        experiment.write_json("provenance.json", collect_provenance(config.seed, digest, built.data.manifests))
        snapshot_code(experiment.directory / "code", recipe, modules)
        return fit_and_record(built, experiment, digest)
    finally:
        experiment.stop()


# Settings that change how a run is watched or how long it goes, never what it computes:
# changing them at resume keeps the result exact.
RESUME_SAFE_KEYS = (
    "trainer.max_epochs", "trainer.max_steps", "trainer.progress_bar", "trainer.log_every",
    "data.num_workers", "experiment.tensorboard", "checkpoint.",
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
) -> dict[str, Any]:
    """``cadence resume``: continue a run in its own folder from its newest valid checkpoint.

    Overrides are compared with the config of the checkpoint resumed from: changes outside
    :data:`RESUME_SAFE_KEYS` would make the result differ from an uninterrupted run, so they
    are refused unless ``allow_config_change``; every resume and its changes are recorded in
    provenance.json.
    """
    directory = Path(directory)
    load_yaml(directory / "config.yaml")  # the folder's own record must be sound (safe loader: no Python tags)
    Checkpointer(directory / "checkpoints").clean_temporary()  # may restore one set aside by a killed save
    start = find_checkpoint(checkpoint or directory)  # fail before anything is built
    saved = load_checkpoint(start)[0].get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{start}: the checkpoint holds no config; resume it from Python with Trainer.fit(resume_from=...)")
    changes = config_diff(saved, apply_overrides(saved, list(overrides)))
    unsafe = [change for change in changes if not change[0].startswith(RESUME_SAFE_KEYS)]
    described = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)
    if unsafe and not allow_config_change:
        raise ConfigError(
            f"resuming {directory} with changes that break exact continuation ({described}); "
            "pass --allow-config-change to accept them (they are recorded in provenance.json)"
        )
    config = validate_recipe(apply_overrides(saved, list(overrides)))
    import_saved_modules(config.imports, directory / "code")
    resolve(config)
    logger = setup_console_logging()
    prepare_run(config)
    experiment = Experiment(directory, tensorboard=config.experiment.tensorboard)
    try:
        built = build(config, experiment)
        logger.info("resuming experiment %s from %s%s", directory, start, f" with changes: {described}" if changes else "")
        digest = config_hash(built.resolved)
        # The config this run continues with (that of its checkpoint, plus any changes).
        experiment.write_text("config.yaml", to_yaml(built.resolved))
        experiment.write_text("config.sha256", digest + "\n")
        record_resume(experiment, start, list(overrides), changes, unsafe)
        return fit_and_record(built, experiment, digest, resume_from=start)
    finally:
        experiment.stop()


def record_resume(experiment: Experiment, checkpoint: Path, overrides: list[str], changes: list, unsafe: list) -> None:
    path = experiment.directory / "provenance.json"
    provenance = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    provenance.setdefault("resumes", []).append({
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint), "overrides": overrides, "command": sys.argv,
        "changes": [{"key": key, "saved": old, "new": new} for key, old, new in changes],
        "exact": not unsafe,
    })
    experiment.write_json("provenance.json", provenance)


def fit_and_record(built: Built, experiment: Experiment, digest: str, resume_from: Path | None = None) -> dict[str, Any]:
    data = built.data
    results = built.trainer.fit(data.train, data.valid, data.test, resume_from=resume_from)
    results = {"experiment": str(experiment.directory), "config_sha256": digest, **results}
    experiment.write_json("results.json", results)
    return results


def print_config(recipe: str | Path, overrides: list[str] = ()) -> str:
    recipe = Path(recipe)
    config = load_recipe(recipe, list(overrides))
    import_user_modules(config.imports, recipe.resolve().parent)
    return to_yaml(resolve(config))
