"""Using the first checkpoint that works: verified, and fitting what it is loaded into.

A checkpoint can verify (every file matches its manifest) and still not fit: it was saved by
another model, or crafted and signed again. Loading it must not crash with a traceback, nor
leave a run without a model: :func:`use_first_that_fits` tries a folder's checkpoints in
order (the newest first to resume, the best first to evaluate) and uses the first one that
both verifies and fits, naming each it skipped and why. A checkpoint named explicitly is used
alone: if it does not fit, the error names it and what did not fit.

>>> import tempfile, torch
>>> from cadence.checkpoint.format import save_checkpoint
>>> folder = tempfile.mkdtemp()
>>> _ = save_checkpoint(f"{folder}/checkpoints/step-000000001", {"weights": torch.zeros(2)}, {"global_step": 1})
>>> path, weights = use_first_that_fits(folder, lambda path, state, metadata: state["weights"])
>>> path.name, weights.tolist()
('step-000000001', [0.0, 0.0])
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, TypeVar

from cadence.checkpoint.checkpointer import checkpoints_folder, checkpoints_in_order, warn_about_unfinished
from cadence.checkpoint.format import MANIFEST_FILE, load_checkpoint
from cadence.errors import CheckpointError

__all__ = ["use_first_that_fits"]

logger = logging.getLogger("cadence")

Result = TypeVar("Result")


def use_first_that_fits(
    path: str | Path, use: Callable[[Path, dict[str, Any], dict[str, Any]], Result], best: bool = False,
) -> tuple[Path, Result]:
    """``(checkpoint, use(checkpoint, state, metadata))`` for the first checkpoint that verifies
    and that ``use`` accepts (``use`` raises :class:`CheckpointError` for a state that does not fit).

    ``path``: a checkpoint folder (used alone), or an experiment or ``checkpoints/`` folder
    (tried in the order of :func:`~cadence.checkpoint.checkpointer.checkpoints_in_order`; each one skipped is a warning).
    """
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        state, metadata = load_checkpoint(path)
        return path, _used(use, path, state, metadata)
    folder = checkpoints_folder(path)
    warn_about_unfinished(folder)
    problems = []
    for candidate in checkpoints_in_order(folder, best):
        try:
            state, metadata = load_checkpoint(candidate)
            return candidate, _used(use, candidate, state, metadata)
        except CheckpointError as error:
            logger.warning("skipped %s", error)  # the error names the checkpoint
            problems.append(str(error))
    found = f"the newest: {problems[0]}" if problems else "there is none"
    raise CheckpointError(
        f"{folder}: no valid checkpoint to use ({found}). Start a new run, or restore a checkpoint from a backup"
    )


def _used(use: Callable[..., Result], path: Path, state: dict[str, Any], metadata: dict[str, Any]) -> Result:
    try:
        return use(path, state, metadata)
    except CheckpointError as error:
        message = str(error)
        raise CheckpointError(message if str(path) in message else f"checkpoint {path}: {message}") from error
