"""Crash-consistent, pickle-free checkpoints.

One checkpoint is one folder: ``tensors.safetensors`` holds every tensor and numpy array
found in the state; ``state.json`` holds the rest, each tensor replaced by a reference such
as ``{"__tensor__": "model/encoder.weight"}``; ``manifest.json``, written last, holds the
format version, the size and sha256 of both files, and the caller's metadata.

A save writes a ``.tmp-`` sibling folder, fsyncs it and renames it into place, so a save
killed at any moment leaves the old checkpoint or the new one (plus a temporary folder
that :class:`Checkpointer` ignores and cleans). Loading verifies the manifest before reading
anything else and only parses JSON and safetensors: nothing is ever unpickled, so a
checkpoint from a stranger cannot run code.

``state.json`` marks what JSON cannot say with one-key objects: ``__tuple__``, ``__dict__``
(``[key, value]`` pairs, for keys that are not str, like optimizer state's ints),
``__ordered_dict__`` (keeps a module state dict's ``_metadata``), ``__float__`` (nan, inf),
``__tensor__``, ``__ndarray__``, ``__numpy_scalar__``, ``__size__``, ``__dtype__``.

Both JSON files are strict JSON (``allow_nan=False``: any parser reads them), and a non-finite
float comes back as the same float (``{"__float__": "nan"}``), in the state (a callback's best
value) and in the metadata (``monitor_value``, ``best_value``) alike: exact resume needs them.
A file with a bare ``NaN`` or ``Infinity`` token, which no cadence writes, still loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cadence.errors import CheckpointError
from cadence.runtime.files import file_sha256

FORMAT, VERSION = "cadence-checkpoint", 1
TENSORS_FILE, STATE_FILE, MANIFEST_FILE = "tensors.safetensors", "state.json", "manifest.json"
DATA_FILES = (TENSORS_FILE, STATE_FILE)
TEMPORARY_PREFIX, TRASH_PREFIX = ".tmp-", ".trash-"
# A deleted checkpoint on its way out: removed by clean_temporary, never restored (unlike trash).
DELETED_PREFIX = ".deleted-"
ABANDONED_FOLDER = ".abandoned"

logger = logging.getLogger("cadence")

_TENSOR, _NDARRAY, _NUMPY_SCALAR = "__tensor__", "__ndarray__", "__numpy_scalar__"
_TUPLE, _DICT, _ORDERED_DICT = "__tuple__", "__dict__", "__ordered_dict__"
_FLOAT, _SIZE, _DTYPE = "__float__", "__size__", "__dtype__"
_MARKERS = frozenset({_TENSOR, _NDARRAY, _NUMPY_SCALAR, _TUPLE, _DICT, _ORDERED_DICT, _FLOAT, _SIZE, _DTYPE})


def _describe(path: tuple) -> str:
    """``("state", "optimizer", 0)`` -> ``state['optimizer'][0]``: where a value sits."""
    return path[0] + "".join(f"[{part!r}]" for part in path[1:])


class _Encoder:
    """Turns a state tree into JSON-ready values, collecting its tensors under unique names."""

    def __init__(self, root: str, allow_tensors: bool = True):
        self.root, self.allow_tensors = root, allow_tensors
        self.tensors: dict[str, torch.Tensor] = {}
        self._name_by_view: dict[tuple, str] = {}
        self._storages: set[int] = set()

    def encode(self, value: Any, path: tuple) -> Any:
        # Exact types: a subclass (IntEnum, namedtuple) would come back as its base type, so
        # it is refused at the end rather than silently changed.
        if value is None or type(value) in (bool, int, str):
            return value
        if type(value) is float:
            return value if math.isfinite(value) else {_FLOAT: repr(value)}  # 'nan', 'inf', '-inf'
        if type(value) is list:
            return [self.encode(item, path + (index,)) for index, item in enumerate(value)]
        if type(value) is tuple:
            return {_TUPLE: [self.encode(item, path + (index,)) for index, item in enumerate(value)]}
        if type(value) is dict:
            return self._encode_dict(value, path)
        if type(value) is OrderedDict:
            # Module.state_dict() hangs per-module versions on `_metadata`; load_state_dict reads them.
            metadata = self.encode(getattr(value, "_metadata", None), path + ("_metadata",))
            return {_ORDERED_DICT: {"entries": self._encode_dict(value, path), "metadata": metadata}}
        if type(value) is torch.Size:
            return {_SIZE: list(value)}
        if isinstance(value, torch.dtype):
            return {_DTYPE: str(value).removeprefix("torch.")}
        if isinstance(value, np.generic) and value.dtype.kind in "biuf" and value.dtype.itemsize <= 8:
            # .item() is a Python bool/int/float, which holds these dtypes exactly.
            return {_NUMPY_SCALAR: {"dtype": value.dtype.str, "value": self.encode(value.item(), path)}}
        if isinstance(value, (torch.Tensor, np.ndarray)) and not self.allow_tensors:
            raise TypeError(f"{_describe(path)} is a {type(value).__name__}: {self.root} takes plain values only")
        if isinstance(value, torch.Tensor) and value.layout == torch.strided:
            return {_TENSOR: self._add_tensor(value, path)}
        if isinstance(value, np.ndarray) and not value.dtype.hasobject and value.dtype.fields is None:
            # Raw bytes with dtype and shape: exact for every numpy dtype, byte order included.
            name = self._unique_name(path)
            self.tensors[name] = torch.from_numpy(np.ascontiguousarray(value).reshape(-1).view(np.uint8).copy())
            return {_NDARRAY: {"tensor": name, "dtype": value.dtype.str, "shape": list(value.shape)}}
        raise TypeError(f"cannot checkpoint {_describe(path)}: unsupported type {type(value).__qualname__}; "
                        "convert it to tensors, arrays, numbers, strings, lists, tuples or dicts (no pickle)")

    def _encode_dict(self, mapping: Mapping, path: tuple) -> Any:
        if all(type(key) is str for key in mapping) and not _MARKERS.intersection(mapping):
            return {key: self.encode(item, path + (key,)) for key, item in mapping.items()}
        for key in mapping:
            if isinstance(key, torch.Tensor):
                raise TypeError(f"cannot checkpoint {_describe(path)}: a tensor as dict key has no stable identity")
        return {_DICT: [[self.encode(key, path + (key,)), self.encode(item, path + (key,))]
                        for key, item in mapping.items()]}

    def _add_tensor(self, tensor: torch.Tensor, path: tuple) -> str:
        # state_dict() detaches each entry, so tied weights arrive as distinct objects viewing the
        # same memory the same way: store them once, and they load back as one tensor.
        view = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
                tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() > 0 and view in self._name_by_view:
            return self._name_by_view[view]
        saved = tensor.detach().to("cpu").contiguous()
        # safetensors refuses two entries sharing memory (a slice of a saved buffer): copy it.
        storage = saved.untyped_storage().data_ptr()
        if storage in self._storages:
            saved = saved.clone()
        self._storages.add(storage)
        name = self._name_by_view[view] = self._unique_name(path)
        self.tensors[name] = saved
        return name

    def _unique_name(self, path: tuple) -> str:
        base = "/".join(str(part) for part in path[1:]) or "tensor"
        name, counter = base, 1
        while name in self.tensors or name == "__metadata__":  # safetensors reserves that key
            counter += 1
            name = f"{base}#{counter}"
        return name


class _Decoder:
    """The inverse of :class:`_Encoder`; a malformed node raises :class:`CheckpointError`."""

    def __init__(self, folder: Path, source: str, tensors: Mapping[str, torch.Tensor], device: torch.device):
        self.folder, self.source, self.tensors, self.device = folder, source, tensors, device
        self._moved: dict[str, torch.Tensor] = {}  # a tensor referenced twice stays one object

    def decode(self, node: Any, path: tuple) -> Any:
        if isinstance(node, list):
            return [self.decode(item, path + (index,)) for index, item in enumerate(node)]
        if not isinstance(node, dict):
            return node  # str, int, float, bool or None, straight from JSON
        if len(node) == 1 and next(iter(node)) in _MARKERS:
            marker, payload = next(iter(node.items()))
            try:
                return self._decode_marker(marker, payload, path)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise CheckpointError(f"checkpoint {self.folder}: {self.source} is malformed at {_describe(path)} "
                                      f"({marker}: {error}); load a checkpoint written by cadence") from error
        return {key: self.decode(item, path + (key,)) for key, item in node.items()}

    def _decode_marker(self, marker: str, payload: Any, path: tuple) -> Any:
        if marker == _TUPLE:
            return tuple(self.decode(item, path + (index,)) for index, item in enumerate(payload))
        if marker == _DICT:
            decoded = {}
            for key, item in payload:
                key = self.decode(key, path + ("<key>",))
                decoded[key] = self.decode(item, path + (key,))  # TypeError for a crafted unhashable key
            return decoded
        if marker == _ORDERED_DICT:
            ordered = OrderedDict(self.decode(payload["entries"], path))
            metadata = self.decode(payload["metadata"], path + ("_metadata",))
            if metadata is not None:
                ordered._metadata = metadata
            return ordered
        if marker == _FLOAT:
            if payload not in ("nan", "inf", "-inf"):
                raise ValueError(f"{payload!r} is not nan, inf or -inf")
            return float(payload)
        if marker == _SIZE:
            return torch.Size([int(size) for size in payload])
        if marker == _DTYPE:
            dtype = getattr(torch, str(payload), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"{payload!r} is not a torch dtype")
            return dtype
        if marker == _TENSOR:
            if payload not in self._moved:
                self._moved[payload] = self.tensors[payload].to(self.device)
            return self._moved[payload]
        dtype = np.dtype(payload["dtype"])
        if marker == _NUMPY_SCALAR:
            if dtype.kind not in "biuf":
                raise ValueError(f"{dtype} scalars are never written")
            return dtype.type(self.decode(payload["value"], path))
        if dtype.hasobject:  # _NDARRAY; its bytes stay on the CPU, where numpy lives
            raise ValueError("object arrays are never written")
        raw = self.tensors[payload["tensor"]].numpy()
        return raw.view(dtype).reshape([int(size) for size in payload["shape"]]).copy()


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "xb") as file:  # "x": the temporary folder is new, so nothing is overwritten
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_directory(path: Path) -> None:
    """Make new entries and renames in ``path`` durable; a file's fsync does not cover them."""
    if os.name == "nt":  # Windows cannot open a folder as a file; NTFS journals renames itself
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def is_temporary(path: str | Path) -> bool:
    """True for the ``.tmp-`` and ``.trash-`` folders that a running (or killed) save leaves."""
    return Path(path).name.startswith((TEMPORARY_PREFIX, TRASH_PREFIX, DELETED_PREFIX))


def save_checkpoint(folder: str | Path, state: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> Path:
    """Save ``state`` (a dict of state dicts and plain values) as the checkpoint ``folder``.

    ``metadata`` (plain values: epoch, global_step, metrics) goes into the manifest, where
    :func:`read_metadata` and :meth:`Checkpointer.list` read it without touching tensors. An
    existing checkpoint at ``folder`` is replaced, and stays valid until the new one is in place.

    >>> import tempfile
    >>> model = torch.nn.Linear(2, 1)
    >>> folder = Path(tempfile.mkdtemp()) / "step-10"
    >>> save_checkpoint(folder, {"model": model.state_dict()}, {"global_step": 10}).name
    'step-10'
    >>> state, metadata = load_checkpoint(folder)
    >>> torch.equal(state["model"]["weight"], model.weight), metadata
    (True, {'global_step': 10})
    """
    final = Path(folder)
    if is_temporary(final):
        raise CheckpointError(f"cannot save checkpoint {final}: names starting with {TEMPORARY_PREFIX} or "
                              f"{TRASH_PREFIX} are reserved for unfinished saves; choose another name")
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of names to state dicts, not {type(state).__qualname__}")
    # Encode before touching the disk, so an unsupported value leaves nothing behind.
    encoder = _Encoder("state")
    state_bytes = json.dumps(encoder.encode(dict(state), ("state",)), allow_nan=False).encode("ascii")
    metadata_tree = _Encoder("metadata", allow_tensors=False).encode(dict(metadata or {}), ("metadata",))

    token = uuid.uuid4().hex[:8]
    temporary = final.parent / f"{TEMPORARY_PREFIX}{final.name}-{token}"
    trash = final.parent / f"{TRASH_PREFIX}{final.name}-{token}"
    old_moved_to_trash = False
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary.mkdir()
        save_file(encoder.tensors, str(temporary / TENSORS_FILE), metadata={"format": "pt"})
        with open(temporary / TENSORS_FILE, "rb+") as tensors_file:  # save_file does not fsync
            os.fsync(tensors_file.fileno())
        _write_durably(temporary / STATE_FILE, state_bytes)
        files = {TENSORS_FILE: {"sha256": file_sha256(temporary / TENSORS_FILE),
                                "bytes": (temporary / TENSORS_FILE).stat().st_size},
                 STATE_FILE: {"sha256": hashlib.sha256(state_bytes).hexdigest(), "bytes": len(state_bytes)}}
        manifest = {"format": FORMAT, "version": VERSION, "files": files, "metadata": metadata_tree}
        # Last: a manifest exists only once everything it describes is on disk.
        _write_durably(temporary / MANIFEST_FILE, json.dumps(manifest, allow_nan=False, indent=2).encode("ascii"))
        _fsync_directory(temporary)
        if final.exists():
            # Set the old checkpoint aside rather than delete it: if we die between the two
            # renames, it is still complete, and Checkpointer.clean_temporary() renames it back.
            os.rename(final, trash)
            old_moved_to_trash = True
        os.rename(temporary, final)
        _fsync_directory(final.parent)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if old_moved_to_trash and not final.exists():
            try:
                os.rename(trash, final)
            except OSError:
                pass  # still complete under its .trash- name; clean_temporary() restores it
        if isinstance(error, (OSError, SafetensorError)):  # SafetensorError: its own I/O failed
            cause = str(error)  # safetensors words it: "Error while serializing: I/O error: File too large (os error 27)"
            if isinstance(error, OSError) and error.strerror:
                cause = f"{error.strerror} ({error.filename})" if error.filename else error.strerror
            raise CheckpointError(f"could not save checkpoint {final}: {cause}; check free space and write "
                                  f"permission in {final.parent} (checkpoints saved before are intact)") from error
        raise
    if old_moved_to_trash:
        shutil.rmtree(trash, ignore_errors=True)  # a leftover goes with clean_temporary()
    return final


def _parse_manifest(folder: Path) -> dict:
    """``manifest.json`` parsed and checked to be a cadence manifest; the files it lists are
    not looked at. The one place a manifest is read (verified or not)."""
    if not (folder / MANIFEST_FILE).is_file():
        raise CheckpointError(f"checkpoint {folder}: {MANIFEST_FILE} is missing: the save never finished, or this is not a "
                              "checkpoint; load an earlier checkpoint")
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"checkpoint {folder}: {MANIFEST_FILE} is not valid JSON ({error}); load an earlier checkpoint") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {folder}: {MANIFEST_FILE} does not describe a {FORMAT}; check the path")
    if not isinstance(manifest.get("metadata", {}), dict):
        raise CheckpointError(f"checkpoint {folder}: {MANIFEST_FILE} has malformed metadata; load an earlier checkpoint")
    return manifest


def peek_metadata(folder: str | Path) -> dict[str, Any] | None:
    """The metadata of a checkpoint's manifest without hashing its files, or None when the
    manifest cannot be read. Cheap enough to list a folder after every save; what is then
    loaded is verified in full."""
    folder = Path(folder)
    try:
        return _decode_metadata(folder, _parse_manifest(folder))
    except (CheckpointError, OSError):
        return None


def _verified_manifest(folder: str | Path) -> tuple[Path, dict]:
    """Check a checkpoint against its manifest; of the contents, only the manifest is parsed."""
    folder = Path(folder)

    def damaged(problem: str, fix: str = "load an earlier checkpoint") -> CheckpointError:
        return CheckpointError(f"checkpoint {folder}: {problem}; {fix}")

    try:
        if not folder.is_dir():
            raise damaged("no such folder", "check the path (Checkpointer.list() shows saved checkpoints)")
        manifest = _parse_manifest(folder)
        if manifest.get("version") != VERSION:
            raise damaged(f"format version {manifest.get('version')!r}, this cadence reads {VERSION}",
                          "load it with the cadence version that wrote it")
        files = manifest.get("files")
        if not isinstance(files, dict) or sorted(files) != sorted(DATA_FILES):
            raise damaged(f"{MANIFEST_FILE} must list exactly {' and '.join(DATA_FILES)}")
        unexpected = sorted({entry.name for entry in folder.iterdir()} - {MANIFEST_FILE, *DATA_FILES})
        if unexpected:
            raise damaged(f"unexpected file(s) {', '.join(unexpected)} beside the checkpoint's own",
                          "discard this checkpoint, or delete those files if you know where they came from")
        for name in DATA_FILES:
            path, expected = folder / name, files[name]
            if path.is_symlink() or not path.is_file():
                raise damaged(f"{name} is missing (or not a regular file)")
            size = path.stat().st_size
            if not isinstance(expected, dict) or size != expected.get("bytes"):
                raise damaged(f"{name} is {size} bytes, not the manifest's size: it was truncated or replaced")
            if file_sha256(path) != expected.get("sha256"):
                raise damaged(f"{name} does not match its sha256 in the manifest: it was changed or damaged")
    except OSError as error:
        raise damaged(f"cannot be read ({error})", "check the path and its permissions") from error
    return folder, manifest


def verify_checkpoint(folder: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``folder`` is a complete, undamaged checkpoint."""
    _verified_manifest(folder)


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The metadata given to :func:`save_checkpoint`, after verifying the checkpoint."""
    return _decode_metadata(*_verified_manifest(folder))


def _decode_metadata(folder: Path, manifest: dict) -> dict[str, Any]:
    return _Decoder(folder, MANIFEST_FILE, {}, torch.device("cpu")).decode(manifest.get("metadata", {}), ("metadata",))


def load_checkpoint(
    folder: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify, then read a checkpoint: returns ``(state, metadata)`` as they were saved.

    Every tensor lands on ``map_location``, RNG states included (``torch.set_rng_state``
    wants the CPU); numpy arrays come back as numpy arrays.
    """
    folder, manifest = _verified_manifest(folder)
    try:
        tensors = load_file(str(folder / TENSORS_FILE), device="cpu")
        with open(folder / STATE_FILE, encoding="utf-8") as state_file:
            state_tree = json.load(state_file)
        state = _Decoder(folder, STATE_FILE, tensors, torch.device(map_location)).decode(state_tree, ("state",))
    except (OSError, ValueError, RecursionError, SafetensorError) as error:
        raise CheckpointError(f"checkpoint {folder}: cannot be read ({error}); load an earlier checkpoint") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {folder}: {STATE_FILE} does not hold a dict; load another checkpoint")
    return state, _decode_metadata(folder, manifest)
