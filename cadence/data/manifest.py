"""JSON Lines manifests: one utterance per line.

A manifest line looks like::

    {"id": "0_george_5", "audio": "../recordings/0_george_5.wav", "duration": 0.298, "label": "zero"}

Required fields are ``id`` (unique in the file), ``audio`` (a path relative to the
folder that holds the manifest, so a corpus and its manifests can move together) and
``duration`` (seconds). Optional fields are ``text``, ``speaker``, ``label`` (strings)
and ``offset`` (seconds): with an offset, the utterance is the segment
``[offset, offset + duration)`` of the audio file; without one, it is the whole file.
Unknown fields are rejected, so a typo such as ``"lable"`` cannot pass unnoticed.

``alignment`` (optional) is a frame-level target: a non-empty list of non-negative ints, the
model class of every OUTPUT frame of the model that made it (0 = the CTC blank, token id + 1
otherwise; see :mod:`cadence.decoding.alignment`). The ``realign`` stage function writes it,
and the ``framewise`` task trains against it. Its length is tied to that model's time stride,
so it is only meaningful for models that subsample time the same way.

Paths are joined and normalised lexically (``os.path``), never through symlinks, so a
manifest written and read back yields exactly the paths that went in.

Example:

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> entry = ManifestEntry(id="a", audio=folder / "wav" / "a.wav", duration=1.5, label="yes")
    >>> write_manifest(folder / "lists" / "train.jsonl", [entry])
    >>> (folder / "lists" / "train.jsonl").read_text().strip()
    '{"id": "a", "audio": "../wav/a.wav", "duration": 1.5, "label": "yes"}'
    >>> read_manifest(folder / "lists" / "train.jsonl")[0] == entry
    True
    >>> aligned = dataclasses.replace(entry, alignment=[0, 3, 3, 0])  # stored as a tuple
    >>> write_manifest(folder / "lists" / "aligned.jsonl", [aligned])
    >>> read_manifest(folder / "lists" / "aligned.jsonl")[0].alignment
    (0, 3, 3, 0)
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import numbers
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cadence.data.packed import PackedSequences, PackedStrings
from cadence.errors import DataError
from cadence.runtime.files import data_file_sha256, json_lines, strict_json, write_bytes_atomic

__all__ = [
    "Manifest",
    "ManifestEntry",
    "manifest_sha256",
    "read_labels",
    "read_manifest",
    "write_bytes_atomic",
    "write_labels",
    "write_manifest",
]

_REQUIRED_FIELDS = ("id", "audio", "duration")
_OPTIONAL_TEXT_FIELDS = ("speaker", "label", "text")
_OPTIONAL_FIELDS = (*_OPTIONAL_TEXT_FIELDS, "alignment")
# The order fields are written in, so that equal entries give equal bytes.
_FIELD_ORDER = ("id", "audio", "duration", "offset", "speaker", "label", "text", "alignment")
# Model classes are small; the bound keeps them in the int64 columns with room to spare.
_MAX_CLASS = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One utterance. ``audio`` is absolute after :func:`read_manifest`; ``alignment`` is
    kept as a tuple (given as any sequence), so entries stay immutable and compare equal."""

    id: str
    audio: Path
    duration: float
    text: str | None = None
    speaker: str | None = None
    label: str | None = None
    offset: float | None = None
    alignment: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.alignment is not None and not isinstance(self.alignment, tuple):
            object.__setattr__(self, "alignment", tuple(self.alignment))  # frozen: set once, here


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_number(value: Any) -> bool:
    # bool is an int subclass; `"duration": true` is a mistake, not 1 second.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _parse_alignment(value: Any, where: str) -> tuple[int, ...]:
    """The ``alignment`` field checked: a non-empty list of model classes (ints >= 0)."""
    # A tuple comes from a ManifestEntry being written; a JSON line can only hold a list.
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"{where}: field 'alignment' must be a non-empty list of model classes (ints >= 0, one per "
                        f"output frame), got {value!r:.80}")
    for frame, item in enumerate(value):
        # bool is an int subclass, and 1.0 is a float: neither is a class index.
        if not isinstance(item, int) or isinstance(item, bool) or not 0 <= item <= _MAX_CLASS:
            raise DataError(f"{where}: field 'alignment' frame {frame} must be a model class (an int in 0..{_MAX_CLASS}; "
                            f"0 is the blank), got {item!r}")
    return tuple(value)


def _parse_fields(record: Any, where: str) -> dict[str, Any]:
    """Check one decoded line; ``where`` is ``"path:line"`` for the error messages."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
    for name in record:
        if name not in _FIELD_ORDER:
            raise DataError(
                f"{where}: field {name!r} is not a manifest field{_suggest(name, _FIELD_ORDER)}; "
                f"allowed fields are {', '.join(_FIELD_ORDER)}"
            )
    for name in _REQUIRED_FIELDS:
        if name not in record:
            raise DataError(f"{where}: field {name!r} is missing; every line needs id, audio and duration")
    for name in ("id", "audio"):
        value = record[name]
        if not isinstance(value, str) or not value:
            raise DataError(f"{where}: field {name!r} must be a non-empty string, got {value!r}")
    for name in ("duration", "offset"):
        value = record.get(name)
        if value is None and name == "offset":
            continue
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise DataError(f"{where}: field {name!r} must be a finite number of seconds >= 0, got {value!r}")
    for name in _OPTIONAL_TEXT_FIELDS:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: field {name!r} must be a string, got {value!r}")
    alignment = record.get("alignment")
    return {
        "id": record["id"],
        "audio": record["audio"],
        "duration": float(record["duration"]),
        "offset": None if record.get("offset") is None else float(record["offset"]),
        **{name: record.get(name) for name in _OPTIONAL_TEXT_FIELDS},
        "alignment": None if alignment is None else _parse_alignment(alignment, where),
    }


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Read and validate a manifest; every problem names ``path:line`` and the field.

    Blank lines are ignored. ``audio`` is resolved against the manifest's folder.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{path}: manifest not found; check the path, or write one with `cadence data manifest DIR --out FILE` "
            "(a folder of audio files) or `cadence data fsdd --out DIR` (the FSDD corpus)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read manifest ({error}); it must be a UTF-8 JSON Lines file") from None

    folder = os.path.dirname(os.path.abspath(path))
    entries: list[ManifestEntry] = []
    first_line_of: dict[str, int] = {}
    for line_number, where, record in json_lines(text, path):
        fields = _parse_fields(record, where)
        if fields["id"] in first_line_of:
            first = first_line_of[fields["id"]]
            raise DataError(f"{where}: field 'id' value {fields['id']!r} repeats line {first}; ids must be unique")
        first_line_of[fields["id"]] = line_number
        fields["audio"] = Path(os.path.normpath(os.path.join(folder, fields["audio"])))
        entries.append(ManifestEntry(**fields))
    if not entries:
        raise DataError(f"{path}: manifest has no utterances; regenerate it (`cadence data manifest DIR --out FILE`, `cadence data fsdd --out DIR`)")
    return entries


def _entry_to_record(entry: ManifestEntry | Mapping[str, Any], folder: str, where: str) -> dict[str, Any]:
    raw = dataclasses.asdict(entry) if isinstance(entry, ManifestEntry) else dict(entry)
    if isinstance(raw.get("audio"), os.PathLike):
        raw["audio"] = os.fspath(raw["audio"])
    raw = {name: value for name, value in raw.items() if value is not None}
    fields = _parse_fields(raw, where)
    # Relative paths are taken from the current directory, as everywhere in Python.
    fields["audio"] = os.path.relpath(os.path.abspath(fields["audio"]), folder).replace(os.sep, "/")
    if fields["alignment"] is not None:
        fields["alignment"] = list(fields["alignment"])  # a JSON array
    return {name: fields[name] for name in _FIELD_ORDER if fields.get(name) is not None}


def write_manifest(path: str | Path, entries: Iterable[ManifestEntry | Mapping[str, Any]]) -> None:
    """Write ``entries`` as JSON Lines at ``path``, atomically, in the given order.

    ``audio`` paths (absolute, or relative to the current directory) are stored relative to
    the manifest's folder. Entries are validated like :func:`read_manifest` validates lines.
    """
    path = Path(path)
    folder = os.path.dirname(os.path.abspath(path))
    lines = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        record = _entry_to_record(entry, folder, f"{path}: entry {index}")
        if record["id"] in seen:
            raise DataError(f"{path}: entry {index} repeats id {record['id']!r}; ids must be unique")
        seen.add(record["id"])
        lines.append(strict_json(record, ensure_ascii=False) + "\n")
    write_bytes_atomic(path, "".join(lines).encode("utf-8"))


def manifest_sha256(path: str | Path) -> str:
    """Hex sha256 of the manifest's bytes, as an experiment's provenance records it."""
    return data_file_sha256(path)


def write_labels(path: str | Path, names: Iterable[str]) -> None:
    """Write class names as a JSON list; a name's position is its class index."""
    names = list(names)
    if len(set(names)) != len(names) or not all(isinstance(name, str) and name for name in names):
        raise DataError(f"{path}: class names must be unique non-empty strings, got {names!r}")
    write_bytes_atomic(path, (strict_json(names, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def read_labels(path: str | Path) -> list[str]:
    """Read class names written by :func:`write_labels`; ``{name: i for i, name in enumerate(...)}`` maps them."""
    try:
        names = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{path}: label file not found; it is written beside the manifests by `cadence data fsdd --out DIR`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read label file ({error}); regenerate it with `cadence data fsdd --out DIR`") from None
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(name, str) and name for name in names)
        or len(set(names)) != len(names)
    ):
        raise DataError(f"{path}: expected a JSON list of unique class names, got {names!r}")
    return names


class Manifest:
    """A manifest held column by column in worker-safe form (numpy arrays and byte buffers).

    ``ids``, ``audio`` (absolute paths), ``speakers``, ``labels`` and ``texts`` are
    :class:`PackedStrings`; ``durations`` and ``offsets`` (NaN: no offset) are float64
    arrays; ``alignments`` is a :class:`PackedSequences` of int64 arrays. An optional field
    absent from a line reads as ``None`` from :meth:`entry` and as ``""`` (an empty array for
    ``alignments``, which a present alignment never is) from its column; ``has(field)`` says
    whether every line has it.

        >>> manifest = Manifest([ManifestEntry(id="a", audio=Path("/x/a.wav"), duration=1.5, text="one two")])
        >>> len(manifest), manifest.durations.tolist(), manifest.texts[0], manifest.has("label")
        (1, [1.5], 'one two', False)
        >>> manifest.alignments[0].tolist(), manifest.entry(0).alignment, manifest.has("alignment")
        ([], None, False)
    """

    def __init__(self, entries: list[ManifestEntry], source: str | Path | None = None) -> None:
        self.source = None if source is None else Path(source)
        self.ids = PackedStrings([entry.id for entry in entries])
        self.audio = PackedStrings([os.fspath(entry.audio) for entry in entries])
        self.durations = np.array([entry.duration for entry in entries], dtype=np.float64)
        self.offsets = np.array([np.nan if entry.offset is None else entry.offset for entry in entries], dtype=np.float64)
        self.speakers = PackedStrings([entry.speaker or "" for entry in entries])
        self.labels = PackedStrings([entry.label or "" for entry in entries])
        self.texts = PackedStrings([entry.text or "" for entry in entries])
        self.alignments = PackedSequences([entry.alignment or () for entry in entries])
        # Per field and line: was the field there (an empty column value may be "" or absent).
        self._present = {
            name: np.array([getattr(entry, name) is not None for entry in entries], dtype=bool) for name in _OPTIONAL_FIELDS
        }

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """Read and validate a JSON Lines manifest (see :func:`read_manifest`)."""
        return cls(read_manifest(path), source=path)

    def __len__(self) -> int:
        return len(self.durations)

    def has(self, field: str) -> bool:
        """Whether every line has ``field``."""
        return bool(self._present[field].all())

    def first_without(self, field: str) -> int | None:
        """The index of the first line without ``field``, or None."""
        missing = np.flatnonzero(~self._present[field])
        return int(missing[0]) if len(missing) else None

    def entry(self, index: int) -> ManifestEntry:
        offset = float(self.offsets[index])
        optional = {name: getattr(self, f"{name}s")[index] if self._present[name][index] else None for name in _OPTIONAL_TEXT_FIELDS}
        alignment = tuple(self.alignments[index].tolist()) if self._present["alignment"][index] else None
        return ManifestEntry(
            id=self.ids[index], audio=Path(self.audio[index]), duration=float(self.durations[index]),
            offset=None if np.isnan(offset) else offset, alignment=alignment, **optional,
        )

    def where(self, index: int) -> str:
        """``"<manifest>: utterance '<id>' (<audio path>)"``, for error messages."""
        origin = f"{self.source}: " if self.source is not None else ""
        return f"{origin}utterance {self.ids[index]!r} ({self.audio[index]})"

    def subset(self, indices: Sequence[int] | np.ndarray) -> Manifest:
        """A new manifest with the given lines, in the given order."""
        return Manifest([self.entry(int(index)) for index in indices], source=self.source)
