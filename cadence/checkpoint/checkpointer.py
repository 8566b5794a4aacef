"""One ``checkpoints/`` folder: saving into it, listing it, finding the checkpoint to use.

- :class:`Checkpointer`: names, saving, deleting, setting aside, cleaning killed saves.
- :func:`find_checkpoint`: the newest valid checkpoint (what a resume starts from).
- :func:`find_best_checkpoint`: the valid checkpoint with the best monitored value (what
  ``cadence eval``, ``transcribe`` and :func:`cadence.load` use).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

import torch

from cadence.checkpoint.format import (
    ABANDONED_FOLDER, DELETED_PREFIX, MANIFEST_FILE, TRASH_PREFIX, is_temporary, load_checkpoint, peek_metadata,
    save_checkpoint, verify_checkpoint,
)
from cadence.checkpoint.retention import CheckpointEntry, best_first, tie_rank
from cadence.errors import CheckpointError
from cadence.runtime.files import writing

__all__ = [
    "Checkpointer", "checkpoint_name", "checkpoints_folder", "checkpoints_in_order", "find_best_checkpoint", "find_checkpoint",
    "listing", "warn_about_unfinished",
]


def checkpoint_name(global_step: int) -> str:
    """The folder name of the Trainer's checkpoint after ``global_step`` steps.

    >>> checkpoint_name(1200)
    'step-000001200'
    """
    return f"step-{global_step:09d}"

logger = logging.getLogger("cadence")


class Checkpointer:
    """Owns one ``checkpoints/`` folder: names, saving, retention, finding the newest valid one.

    One process writes into it (rank 0). Retention policies pick from :meth:`list` and
    call :meth:`delete`.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _path_of(self, name: str) -> Path:
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise CheckpointError(f"invalid checkpoint name {name!r} in {self.directory}: use a plain folder "
                                  "name such as 'step-1000' (no path separator, no leading dot)")
        return self.directory / name

    def save(self, name: str, state: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> Path:
        """Save ``state`` as ``directory/name``; a ``global_step`` in ``metadata`` orders checkpoints.

        A valid checkpoint of that name is replaced; a damaged one (a resumed run saving the
        step it was skipped at) is moved into ``.abandoned/`` with a warning, never deleted.
        """
        path = self._path_of(name)
        if path.exists():
            try:
                verify_checkpoint(path)
            except CheckpointError as error:
                self._set_aside(path, f"damaged ({_problem(error, path)}) and about to be replaced by a new save")
        return save_checkpoint(path, state, metadata)

    def load(self, name_or_path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
        """Load a checkpoint by its name in this folder, or by any path."""
        path = Path(name_or_path)
        if not path.is_absolute() and len(path.parts) == 1:
            path = self._path_of(str(name_or_path))
        return load_checkpoint(path, map_location)

    def list(self) -> list[Path]:
        """Folders with a manifest, oldest first: by metadata ``global_step``, then by name.

        Hashes are not checked here (:meth:`latest` does); folders without an integer
        ``global_step`` come first.
        """
        return [path for path, _ in self.manifests()]

    def manifests(self) -> list[tuple[Path, dict | None]]:
        """Each folder with a manifest and that manifest's metadata (None when unreadable),
        oldest first as in :meth:`list`; every manifest is read once, none of the files hashed."""
        if not self.directory.is_dir():
            return []
        found = [(entry, peek_metadata(entry)) for entry in self.directory.iterdir()
                 if not entry.name.startswith(".") and (entry / MANIFEST_FILE).is_file()]

        def order(item: tuple[Path, dict | None]) -> tuple:
            path, metadata = item
            step = (metadata or {}).get("global_step")
            return (1, step, path.name) if type(step) is int else (0, 0, path.name)

        return sorted(found, key=order)

    def latest(self, damaged: set[Path] | None = None) -> Path | None:
        """The newest checkpoint that verifies; damaged newer ones are skipped with a warning
        (and added to ``damaged``, when given, so that a caller looking further warns no more)."""
        damaged = set() if damaged is None else damaged
        warn_about_unfinished(self.directory, damaged)
        return next((path for path in checkpoints_in_order(self.directory, best=False) if is_valid(path, damaged)), None)

    def delete(self, name: str) -> None:
        """Remove a checkpoint at once (renamed away first), never leaving half of one."""
        path = self._path_of(name)
        if not path.is_dir():
            raise CheckpointError(f"cannot delete checkpoint {path}: no such folder; see Checkpointer.list()")
        trash = self.directory / f"{DELETED_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, trash)
            shutil.rmtree(trash)
        except OSError as error:
            raise CheckpointError(f"cannot delete checkpoint {path}: {error}; check permissions") from error

    def set_aside_newer_than(self, checkpoint: Path) -> list[Path]:
        """Move checkpoints saved after ``checkpoint`` (by ``global_step``) into ``.abandoned/``.

        Resuming from an older checkpoint starts a new timeline; the newer ones would otherwise
        count as the newest for retention and for the next resume. Nothing is deleted.
        """
        listed = self.list()
        if checkpoint not in listed:
            return []
        return [self._set_aside(path, f"newer than {checkpoint.name}, the checkpoint resumed from")
                for path in listed[listed.index(checkpoint) + 1 :]]

    def _set_aside(self, path: Path, why: str) -> Path:
        """Move ``path`` into ``.abandoned/`` under a unique name, with a warning saying ``why``."""
        target = self.directory / ABANDONED_FOLDER / f"{path.name}-{uuid.uuid4().hex[:8]}"
        with writing(target):
            target.parent.mkdir(exist_ok=True)
            os.rename(path, target)
        logger.warning("set aside %s (%s) as %s", path.name, why, target)
        return target

    def clean_temporary(self) -> list[Path]:
        """Remove the ``.tmp-`` / ``.trash-`` folders of killed saves; returns what was removed.

        A ``.trash-`` folder whose name is otherwise gone is the old checkpoint of a save killed
        between its two renames: it is renamed back instead. Call this before training starts,
        never while another process saves into the same folder.
        """
        removed = []
        for entry in sorted(self.directory.iterdir()) if self.directory.is_dir() else []:
            if not is_temporary(entry):
                continue
            original = self.directory / entry.name[len(TRASH_PREFIX):].rsplit("-", 1)[0]
            if entry.name.startswith(TRASH_PREFIX) and not original.exists():
                try:
                    verify_checkpoint(entry)
                    os.rename(entry, original)
                    logger.warning("restored checkpoint %s, set aside by an interrupted save", original)
                    continue
                except (CheckpointError, OSError):
                    pass
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        return removed


def listing(checkpointer: Checkpointer) -> list[CheckpointEntry]:
    """Each readable checkpoint as a :class:`CheckpointEntry` (name, step, monitored value), oldest first, read
    from the manifests without hashing the files (retention runs after every save)."""
    return _entries(checkpointer.manifests())


def _entries(manifests: list[tuple[Path, dict | None]]) -> list[CheckpointEntry]:
    entries = []
    for path, metadata in manifests:
        if metadata is None:
            continue  # damaged: left alone, and skipped when resuming
        value, step = metadata.get("monitor_value"), metadata.get("global_step")
        ties = metadata.get("tie_breakers")
        ranks = tuple(tie_rank(tie.get("value"), tie.get("mode")) for tie in ties if isinstance(tie, dict)) if isinstance(ties, list) else ()
        entries.append(CheckpointEntry(
            path.name, step if type(step) is int else -1, _as_float(value), ranks,
        ))
    return entries


def is_valid(path: Path, damaged: set[Path]) -> bool:
    """Whether ``path`` verifies; a damaged one is warned about once, then remembered in ``damaged``."""
    if path in damaged:
        return False
    try:
        verify_checkpoint(path)
        return True
    except CheckpointError as error:
        logger.warning("skipping damaged checkpoint %s: %s", path, _problem(error, path))
        damaged.add(path)
        return False


def _problem(error: CheckpointError, path: Path) -> str:
    """The error's message without its leading ``checkpoint PATH:`` (the warning names it already)."""
    return str(error).removeprefix(f"checkpoint {path}: ")


def checkpoints_in_order(folder: Path, best: bool) -> list[Path]:
    """The checkpoints of a ``checkpoints/`` folder in the order to try them, unverified: newest
    first; or (``best``) those with a monitored value best first by the run's mode (ties to the
    earliest), then the others newest first. Each manifest is read once."""
    found = Checkpointer(folder).manifests()
    newest_first = [path for path, _ in reversed(found)]
    if not best:
        return newest_first
    mode = next((metadata["mode"] for _, metadata in reversed(found)
                 if isinstance(metadata, dict) and metadata.get("mode") in ("min", "max")), "min")
    ranked = [folder / entry.name for entry in best_first(_entries(found), mode)]
    return ranked + [path for path in newest_first if path not in ranked]


def checkpoints_folder(path: str | Path) -> Path:
    """The ``checkpoints/`` folder of an experiment folder, or ``path`` itself when it is one."""
    path = Path(path)
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not folder.is_dir():
        raise CheckpointError(f"{path}: no checkpoint or experiment folder here; give an experiment folder or a checkpoint folder")
    return folder


def warn_about_unfinished(folder: Path, damaged: set[Path] | None = None) -> None:
    """A warning for each folder in ``folder`` without a manifest (a save that never finished)."""
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.is_dir() and not entry.name.startswith(".") and not (entry / MANIFEST_FILE).is_file():
            logger.warning("skipping damaged checkpoint %s: it has no %s (lost, or never completed)", entry, MANIFEST_FILE)
            if damaged is not None:
                damaged.add(entry)


def find_checkpoint(path: str | Path, damaged: set[Path] | None = None) -> Path:
    """A checkpoint folder, or the newest valid one in an experiment or ``checkpoints/`` folder.

    A damaged newest checkpoint is skipped with a warning naming it (and added to ``damaged``,
    when given); when none is valid, a :class:`CheckpointError` says so (a run never silently
    starts from scratch).
    """
    return _first_valid(path, best=False, damaged=set() if damaged is None else damaged)


def find_best_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or an experiment's valid checkpoint with the best monitored value.

    What a trained model is used for (``cadence eval``, ``transcribe``, :func:`cadence.load`) is
    the model the run kept as best and tested, not whatever epoch came last. Without any
    monitored value (no validation), the newest valid checkpoint.
    """
    return _first_valid(path, best=True, damaged=set())  # each damaged checkpoint is warned about once


def _first_valid(path: str | Path, best: bool, damaged: set[Path]) -> Path:
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return path
    folder = checkpoints_folder(path)
    warn_about_unfinished(folder, damaged)
    found = next((candidate for candidate in checkpoints_in_order(folder, best) if is_valid(candidate, damaged)), None)
    if found is None:
        raise CheckpointError(
            f"{folder}: no valid checkpoint to resume from (none, or every one is damaged; see the warnings above). "
            "Start a new run, or restore a checkpoint from a backup"
        )
    return found


def _as_float(value: Any) -> float | None:
    """A manifest's monitored value as a float, or None (unverified metadata: anything may be there)."""
    if type(value) not in (int, float):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        return None
