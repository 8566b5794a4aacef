"""Running a recipe end to end: validate, create the experiment, build, fit, record."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from cadence.build import build, import_user_modules, resolve
from cadence.config import RecipeConfig, config_hash, load_recipe, to_yaml
from cadence.errors import CadenceError, ConfigError
from cadence.experiment import Experiment, unique_directory
from cadence.logs import setup_console_logging
from cadence.provenance import collect_provenance, snapshot_code
from cadence.rng import seed_everything


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
        data = built.data
        results = built.trainer.fit(data.train, data.valid, data.test)
        results = {"experiment": str(experiment.directory), "config_sha256": digest, **results}
        experiment.write_json("results.json", results)
        return results
    finally:
        experiment.stop()


def print_config(recipe: str | Path, overrides: list[str] = ()) -> str:
    recipe = Path(recipe)
    config = load_recipe(recipe, list(overrides))
    import_user_modules(config.imports, recipe.resolve().parent)
    return to_yaml(resolve(config))
