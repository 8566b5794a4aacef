"""A folder a corpus generator owns: reuse when complete, regenerate when stale, never
touch what it did not write, one generator at a time.

A generated corpus is complete when its description file (written last, atomically) says
so; anything else in the folder that the generator's own names cover is left-over from an
interrupted or differently configured run and may be deleted; any other file means the
folder belongs to someone else, and generation is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cadence.runtime.files import strict_json, write_bytes_atomic, writing
from cadence.errors import DataError

try:  # POSIX; elsewhere concurrent preparation of one folder is simply not guarded
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["GeneratedFolder"]

logger = logging.getLogger("cadence")

LOCK_FILE = ".lock"


class GeneratedFolder:
    """``path`` as the output of the generator of ``corpus``, which writes only ``own_names``.

    ``corpus`` is the name recorded in the description (``"connected-digits"``); messages
    use ``title`` (``"connected digits"``).
    """

    def __init__(self, path: Path, corpus: str, title: str, description_file: str, own_names: Iterable[str]) -> None:
        self.path = path
        self.corpus = corpus
        self.title = title
        self.description_file = description_file
        self.own_names = frozenset(own_names) | {description_file, LOCK_FILE}

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise generators of this folder (e.g. several ranks): later ones find it ready."""
        with writing(self.path / LOCK_FILE):  # a read-only folder: a StorageError naming the file
            handle = open(self.path / LOCK_FILE, "a+b")
        with handle:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file closes
                except OSError as error:  # e.g. a network file system without locks
                    logger.warning("%s: cannot lock %s (%s); prepare it once at a time", self.title, self.path, error)
            yield

    def description(self) -> dict[str, Any] | None:
        try:
            description = json.loads((self.path / self.description_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return description if isinstance(description, dict) else None

    def is_ready(self, parameters: dict[str, Any], fingerprint: str, required_files: Iterable[str]) -> bool:
        description = self.description()
        return (
            description is not None
            and description.get("parameters") == parameters
            and description.get("source", {}).get("fingerprint") == fingerprint
            and all((self.path / name).is_file() for name in required_files)
        )

    def refuse_foreign_content(self) -> None:
        """Raise unless the folder holds only what the generator writes (or nothing)."""

        def is_own(name: str) -> bool:
            # Dot-names ending in .tmp are write_bytes_atomic's temporary files.
            return name in self.own_names or (name.startswith(".") and name.endswith(".tmp"))

        foreign = sorted(child.name for child in self.path.iterdir() if not is_own(child.name))
        description = self.description()
        if description is not None and description.get("corpus") != self.corpus:
            foreign.append(self.description_file)
        if foreign:
            raise DataError(
                f"{self.path}: cannot generate {self.title} here, the folder holds files it did not write "
                f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); choose an empty or new folder"
            )

    def clear(self) -> None:
        """Delete what an earlier (interrupted, or other-parameter) run left; refuse foreign content."""
        self.refuse_foreign_content()
        # The description first: if this run dies below, none claims the half-deleted files.
        (self.path / self.description_file).unlink(missing_ok=True)
        for child in self.path.iterdir():
            if child.name == LOCK_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink(missing_ok=True)

    def write_description(self, description: dict[str, Any]) -> None:
        """Written last: its presence is what marks the folder complete."""
        write_bytes_atomic(self.path / self.description_file, (strict_json(description, indent=2) + "\n").encode("utf-8"))
