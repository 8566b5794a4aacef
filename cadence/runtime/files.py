"""Writing files so that a crash never leaves half of one, and hashing them.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "results.json"
>>> write_json_atomic(path, {"accuracy": 1.0})
>>> file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
True
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

__all__ = ["config_hash", "file_sha256", "to_yaml", "write_bytes_atomic", "write_json_atomic"]


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    Temp file in the same folder, fsync, rename, fsync of the folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder_descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder_descriptor)
    finally:
        os.close(folder_descriptor)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, content: Any) -> None:
    """Write JSON to a temporary file, then rename: a reader never sees half a file."""
    write_bytes_atomic(path, (json.dumps(content, indent=2, default=str) + "\n").encode("utf-8"))


def config_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the resolved config in canonical JSON, to tell two runs' configs apart."""
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def to_yaml(resolved: dict[str, Any]) -> str:
    """A resolved config as YAML, keys in their order (what ``config.yaml`` and ``--print-config`` show)."""
    return yaml.safe_dump(resolved, sort_keys=False, default_flow_style=False)
