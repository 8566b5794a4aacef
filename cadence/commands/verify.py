"""``cadence verify-resume``: a user's own check that their recipe resumes exactly.

The recipe trains ``steps`` optimizer steps twice: once straight through, and once
stopped after ``interrupt_at`` steps (a checkpoint is written, the process state is thrown
away) and resumed with ``cadence resume``. Every value the two final checkpoints hold is
compared: weights, optimizer and schedule state, trainer state, loader position, random
generators. Anything not bit-identical is listed by its key.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadence.checkpoint.checkpointer import checkpoint_name
from cadence.checkpoint.format import load_checkpoint
from cadence.errors import ConfigError
from cadence.commands.train import resume_experiment, train_recipe

__all__ = ["differences", "verify_resume"]

# Compared groups of a checkpoint (the config differs by max_steps, on purpose).
COMPARED = ("task", "optimizer", "scheduler", "trainer_state", "epoch_sums", "train_data", "train_metrics", "callbacks", "stages", "rng")


def differences(first: Any, second: Any, path: str = "") -> tuple[int, list[str]]:
    """(tensors compared, keys whose values differ) between two nested states.

    Bit-exact: tensors and arrays by dtype, shape and every element; other values by type
    and equality (NaN equals NaN).
    """
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
        same = first.dtype == second.dtype and first.shape == second.shape and torch.equal(first, second)
        return 1, [] if same else [path]
    if isinstance(first, np.ndarray) and isinstance(second, np.ndarray):
        return 1, [] if first.dtype == second.dtype and np.array_equal(first, second) else [path]
    if isinstance(first, dict) and isinstance(second, dict):
        if first.keys() != second.keys():
            return 0, [f"{path} (keys differ)"]
        results = [differences(first[key], second[key], f"{path}.{key}" if path else str(key)) for key in first]
    elif isinstance(first, (list, tuple)) and type(first) is type(second) and len(first) == len(second):
        results = [differences(one, other, f"{path}[{index}]") for index, (one, other) in enumerate(zip(first, second))]
    else:
        both_nan = isinstance(first, float) and isinstance(second, float) and math.isnan(first) and math.isnan(second)
        return 0, [] if type(first) is type(second) and (first == second or both_nan) else [path]
    return sum(count for count, _ in results), [key for _, keys in results for key in keys]


def within_run(state: Any, folder: str | Path) -> Any:
    """``state`` with every string that is a path inside ``folder`` written relative to it (``<run>/...``)."""
    if isinstance(state, dict):
        return {key: within_run(value, folder) for key, value in state.items()}
    if isinstance(state, list):
        return [within_run(value, folder) for value in state]
    if isinstance(state, str) and (state == str(folder) or state.startswith(f"{folder}/")):
        return "<run>" + state[len(str(folder)):]
    return state


def verify_resume(recipe: str | Path, overrides: list[str] = (), steps: int = 20, interrupt_at: int | None = None) -> dict[str, Any]:
    """Run the comparison in a temporary folder; returns a JSON-able report."""
    interrupt_at = interrupt_at or max(1, steps // 2 + 1)  # an odd place: rarely an epoch boundary
    if not 0 < interrupt_at < steps:
        raise ConfigError(f"--interrupt-at must be between 1 and --steps - 1 = {steps - 1}, got {interrupt_at}")
    quiet = ["trainer.progress_bar=false"]
    with tempfile.TemporaryDirectory(prefix="cadence-verify-") as root:
        straight = train_recipe(recipe, [*overrides, *quiet, f"trainer.max_steps={steps}"], exp_dir=Path(root) / "straight")
        train_recipe(recipe, [*overrides, *quiet, f"trainer.max_steps={interrupt_at}"], exp_dir=Path(root) / "interrupted")
        resumed = resume_experiment(Path(root) / "interrupted", [f"trainer.max_steps={steps}"])
        name = checkpoint_name(steps)
        first, _ = load_checkpoint(Path(straight["experiment"]) / "checkpoints" / name)
        second, _ = load_checkpoint(Path(resumed["experiment"]) / "checkpoints" / name)
    # Each run has its own folder: a path inside it (a stage function's output) compares relative to it.
    first = within_run({key: first.get(key) for key in COMPARED}, straight["experiment"])
    second = within_run({key: second.get(key) for key in COMPARED}, resumed["experiment"])
    compared, differing = differences(first, second)
    return {
        "recipe": str(recipe), "steps": steps, "interrupted_after": interrupt_at,
        "tensors_compared": compared, "identical": not differing, "differences": differing,
    }
