"""Writing files so that a crash never leaves half of one, strict JSON, and hashing files.

Every JSON document cadence writes (``results.json``, ``metrics.jsonl``, ``provenance.json``,
hypotheses, manifests, the CLI's output) goes through :func:`strict_json`: JSON has no NaN
or infinity, and strict parsers reject the bare ``NaN`` that Python's ``json`` writes by
default, so **a non-finite number is written as ``null``** (a NaN loss, an F1 of nothing
counted). Checkpoints keep them exactly instead (``cadence.checkpoint.format`` marks them).

A write that fails (disk full, a file size or quota limit, a read-only folder, no
permission) raises :class:`~cadence.errors.StorageError` naming the path and the cause; the
file's previous version, if any, is left as it was.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "results.json"
>>> write_json_atomic(path, {"accuracy": 1.0, "loss": float("nan")})
>>> json.loads(path.read_text())
{'accuracy': 1.0, 'loss': None}
>>> file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
True
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, TextIO

import yaml

from cadence.errors import DataError, StorageError

__all__ = [
    "STORAGE_ERRNOS", "config_hash", "data_file_sha256", "file_sha256", "finite_or_none", "open_for_append", "refuse_symlink",
    "storage_error", "strict_json", "to_yaml", "write_bytes_atomic", "write_json_atomic", "writing",
]

# What a full or read-only disk looks like: no space, over quota, over the file size limit,
# read-only file system, no permission.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(path: str | Path, error: OSError) -> StorageError:
    """The :class:`StorageError` for a failed write of ``path``: the OS's words for the cause."""
    return StorageError(path, error.strerror or str(error), error.errno)


def refuse_symlink(path: str | Path) -> None:
    """A :class:`StorageError` when ``path`` is a symbolic link: a file cadence appends to or cuts
    in a folder someone gave you (``train.log``, ``metrics.jsonl``) could point at any file of
    yours. (Whole-file writes replace the link itself, by rename, and are safe.)"""
    if Path(path).is_symlink():
        raise StorageError(path, "it is a symbolic link", errno.ELOOP,
                           fix="cadence appends only to the folder's own files: replace the link by a file")


def open_for_append(path: str | Path) -> TextIO:
    """``open(path, "a")``, refusing a symbolic link (:func:`refuse_symlink`), atomically."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            refuse_symlink(path)
        raise
    return os.fdopen(descriptor, "a", encoding="utf-8")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into the :class:`StorageError` for ``path``.

    >>> try:
    ...     with writing("/no/such/folder/results.json"):
    ...         _ = open("/no/such/folder/results.json", "w")
    ... except StorageError as error:
    ...     print(error.path, "-", error.cause)
    /no/such/folder/results.json - No such file or directory
    """
    try:
        yield
    except OSError as error:
        raise storage_error(path, error) from error


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    Temp file in the same folder, fsync, rename, fsync of the folder. A failure raises
    :class:`StorageError` and leaves the old file (if any) as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise storage_error(path, error) from error
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise storage_error(path, error) from error
        raise
    try:
        folder_descriptor = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder_descriptor)
        finally:
            os.close(folder_descriptor)
    except OSError as error:
        raise storage_error(path, error) from error


def data_file_sha256(path: str | Path) -> str:
    """Hex sha256 of a data file (a manifest), as provenance records it; a :class:`DataError` naming it."""
    try:
        return file_sha256(path)
    except OSError as error:
        raise DataError(f"{path}: cannot hash the data file ({error.strerror or error}); check the path") from None


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def finite_or_none(value: Any) -> Any:
    """``value`` with each non-finite number (nan, inf, -inf) replaced by None, inside dicts,
    lists and tuples too; numpy numbers become Python numbers.

    >>> finite_or_none({"loss": float("nan"), "steps": [1, float("inf"), 0.5]})
    {'loss': None, 'steps': [1, None, 0.5]}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def strict_json(content: Any, indent: int | None = None, ensure_ascii: bool = True) -> str:
    """``content`` as JSON that strict parsers accept: non-finite numbers as ``null``, other
    objects (paths) as their ``str()``. ``allow_nan=False``: nothing can slip past as ``NaN``.

    >>> strict_json({"test/loss": float("nan"), "test/accuracy": 1.0})
    '{"test/loss": null, "test/accuracy": 1.0}'
    """
    return json.dumps(finite_or_none(content), indent=indent, ensure_ascii=ensure_ascii, default=str, allow_nan=False)


def json_lines(text: str, path: str | Path) -> Iterator[tuple[int, str, Any]]:
    """``(line number, "path:line", decoded value)`` for each non-blank line of a JSON Lines
    file's ``text``; a line that is not JSON is a DataError naming it."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield number, where, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: invalid JSON ({error.msg} at column {error.colno}); fix or remove this line") from None


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; empty when the file is missing, unreadable or not an object
    (a run's side files, read by the commands that list runs: never a reason to fail)."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def write_json_atomic(path: Path, content: Any) -> None:
    """Write strict JSON to a temporary file, then rename: a reader never sees half a file."""
    write_bytes_atomic(path, (strict_json(content, indent=2) + "\n").encode("utf-8"))


def config_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the resolved config in canonical JSON, to tell two runs' configs apart.

    Not :func:`strict_json`: the hash must stay what it was for every existing config (it is
    hashed, never written, so a NaN in it does no harm).
    """
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def dotted_keys(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (``optimizer.lr``); lists stay values.

    >>> dotted_keys({"optimizer": {"name": "adamw", "lr": 0.002}, "metrics": ["wer"]})
    {'optimizer.name': 'adamw', 'optimizer.lr': 0.002, 'metrics': ['wer']}
    """
    if not isinstance(config, dict):
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(dotted_keys(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def to_yaml(resolved: dict[str, Any]) -> str:
    """A resolved config as YAML, keys in their order (what ``config.yaml`` and ``--print-config`` show)."""
    return yaml.dump(resolved, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False, default_flow_style=False)


def cache_dir(name: str) -> Path:
    """Where cadence keeps what it downloads, generates or simulates once: ``$CADENCE_CACHE/<name>``,
    else ``$XDG_CACHE_HOME/cadence/<name>``, else ``~/.cache/cadence/<name>``."""
    if os.environ.get("CADENCE_CACHE"):
        return Path(os.environ["CADENCE_CACHE"]) / name
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache_home) / "cadence" / name
