"""Build a manifest from a folder of audio files, and check every file a manifest names.

:func:`build_manifest` turns ``folder/**/*.wav`` (and flac, ogg) into a manifest: ids are
the relative paths without extension, durations come from the file headers (nothing is
decoded), transcripts from ``.txt`` files beside the audio or from one TSV file. A WAV file
holding less data than its header declares (a cut-short copy) is refused: its header
duration would be a lie.

:func:`check_manifest` decodes every file the way training would (:func:`load_audio`), and
reports which are bad and why, before a training run finds them one by one.

Example:

    >>> import tempfile, pathlib, numpy, soundfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> soundfile.write(folder / "a.wav", numpy.full(800, 0.1, dtype="float32"), 8000)
    >>> _ = (folder / "a.txt").write_text("hello world\\n")
    >>> [(entry.id, entry.duration, entry.text) for entry in build_manifest(folder, folder / "all.jsonl")]
    [('a', 0.1, 'hello world')]
    >>> report = check_manifest(folder / "all.jsonl")
    >>> report.is_clean, report.utterances
    (True, 1)
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import soundfile

from cadence.data.audio import (
    TRUNCATION_TOLERANCE_S,
    BadAudio,
    MonoPolicy,
    audio_header,
    cannot_open,
    load_audio,
    read_wav_data_chunk,
)
from cadence.data.manifest import ManifestEntry, read_manifest, write_manifest
from cadence.errors import DataError
from cadence.runtime.logs import progress

__all__ = ["BadUtterance", "DurationMismatch", "ManifestReport", "build_manifest", "check_manifest"]

logger = logging.getLogger("cadence")

# How many bad files the readable report lists; the JSON summary lists them all.
_REPORT_LISTS_AT_MOST = 50


# ---------------------------------------------------------------------------- build_manifest


def _find_audio_files(folder: Path, extensions: Iterable[str]) -> dict[str, Path]:
    """``{id: path}`` sorted by id; hidden files and folders (names starting with '.') are skipped."""
    suffixes = {"." + extension.lower().lstrip(".") for extension in extensions}
    found: dict[str, Path] = {}
    for directory, subdirectories, names in os.walk(folder):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for name in names:
            path = Path(directory) / name
            if name.startswith(".") or path.suffix.lower() not in suffixes:
                continue
            utterance_id = path.relative_to(folder).with_suffix("").as_posix()
            if utterance_id in found:
                raise DataError(
                    f"{found[utterance_id]} and {path} would both get id {utterance_id!r}; "
                    "rename one, or limit the extensions"
                )
            found[utterance_id] = path
    return dict(sorted(found.items()))


def _read_transcript_table(path: Path) -> dict[str, str]:
    """``id<TAB>text`` per line; blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: transcript file not found; check the --transcripts path") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read transcripts ({error}); it must be a UTF-8 text file") from None
    table: dict[str, str] = {}
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        utterance_id, tab, text = line.partition("\t")
        if not tab or not utterance_id.strip():
            raise DataError(f"{path}:{line_number}: expected 'id<TAB>text', got {line[:60]!r}")
        utterance_id = utterance_id.strip()
        if utterance_id in table:
            raise DataError(f"{path}:{line_number}: id {utterance_id!r} appears twice; keep one transcript per id")
        table[utterance_id] = " ".join(text.split())
    return table


def _read_sidecar(audio_path: Path) -> str | None:
    sidecar = audio_path.with_suffix(".txt")
    try:
        # Whitespace runs (a trailing newline, line breaks) become single spaces.
        return " ".join(sidecar.read_text(encoding="utf-8").split())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{sidecar}: cannot read transcript ({error}); it must be a UTF-8 text file") from None


def _header_duration(path: Path) -> float:
    how_to_fix = "repair or remove the file, then run again"
    info = audio_header(path, how_to_fix)
    # libsndfile counts the frames a cut-short WAV really holds, so its header would pass as a
    # short file; the data chunk's declared size says what it should hold.
    try:
        chunk = read_wav_data_chunk(path)
    except OSError as error:
        raise DataError(f"{path}: cannot read the audio header ({error}); {how_to_fix}") from None
    if chunk is not None and chunk.is_cut_short:
        raise DataError(f"{path}: truncated: the file is cut short: {chunk.describe()}; {how_to_fix}")
    return info.frames / info.samplerate


def build_manifest(
    folder: str | Path,
    out: str | Path,
    transcripts: str | Path | None = None,
    extensions: Iterable[str] = ("wav", "flac", "ogg"),
) -> list[ManifestEntry]:
    """Write a manifest at ``out`` for every audio file under ``folder``; return its entries.

    ids: paths relative to ``folder`` without the extension (``spk1/utt3``), in sorted order.
    Durations: from the headers (``frames / samplerate``), nothing decoded; run
    :func:`check_manifest` to decode. Transcripts (``text``): from ``transcripts``, a TSV file
    of ``id<TAB>text`` lines, when given; otherwise from a ``.txt`` file beside each audio
    file (``spk1/utt3.txt``). Files without a transcript get no ``text`` (a warning says how
    many). Hidden files and folders are skipped. A WAV file holding less audio data than its
    header declares raises :class:`DataError` naming it and both sizes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; give the folder that holds the audio files")
    extensions = tuple(extensions)
    audio_files = _find_audio_files(folder, extensions)
    if not audio_files:
        raise DataError(
            f"{folder}: no audio files found (looked for {', '.join('*.' + extension for extension in extensions)}, "
            "in subfolders too); check the folder"
        )
    if transcripts is not None:
        table = _read_transcript_table(Path(transcripts))
        unmatched = sorted(set(table) - set(audio_files))
        if unmatched:
            examples = ", ".join(repr(utterance_id) for utterance_id in unmatched[:5])
            raise DataError(
                f"{transcripts}: {len(unmatched)} id(s) match no audio file under {folder} ({examples}"
                f"{', ...' if len(unmatched) > 5 else ''}); ids are paths relative to the folder without the "
                f"extension, e.g. {next(iter(audio_files))!r}"
            )
        texts = {utterance_id: table.get(utterance_id) for utterance_id in audio_files}
    else:
        texts = {utterance_id: _read_sidecar(path) for utterance_id, path in audio_files.items()}

    entries = [
        ManifestEntry(id=utterance_id, audio=path, duration=_header_duration(path), text=texts[utterance_id])
        for utterance_id, path in progress(audio_files.items(), True, f"reading {folder.name}", total=len(audio_files))
    ]
    without_text = [entry.id for entry in entries if entry.text is None]
    if without_text and len(without_text) < len(entries):
        logger.warning(
            "%d of %d audio files have no transcript (first: %s); their manifest lines carry no text",
            len(without_text), len(entries), without_text[0],
        )
    write_manifest(out, entries)
    return entries


# ---------------------------------------------------------------------------- check_manifest


@dataclasses.dataclass(frozen=True)
class BadUtterance:
    """One utterance whose audio cannot be used; ``reason`` is a key of ``BAD_AUDIO_REASONS``."""

    id: str
    path: Path
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class DurationMismatch:
    """A whole-file utterance whose audio is longer than its manifest duration (usable, but
    length-aware batching under-counts it). Shorter audio is bad (``truncated``) instead."""

    id: str
    path: Path
    manifest_duration: float
    audio_duration: float


@dataclasses.dataclass(frozen=True)
class ManifestReport:
    """What :func:`check_manifest` found. ``sample_rates``: ``{file rate: utterances}`` of readable headers."""

    manifest: Path
    utterances: int
    bad: list[BadUtterance]
    longer_than_manifest: list[DurationMismatch]
    sample_rates: dict[int, int]
    options: dict[str, Any]

    @property
    def is_clean(self) -> bool:
        return not self.bad

    @property
    def counts_by_reason(self) -> dict[str, int]:
        return dict(sorted(collections.Counter(utterance.reason for utterance in self.bad).items()))

    def summary(self) -> dict[str, Any]:
        """The report as JSON-able data (every bad utterance included)."""
        return {
            "manifest": str(self.manifest),
            "options": self.options,
            "utterances": self.utterances,
            "clean": self.is_clean,
            "bad": len(self.bad),
            "bad_by_reason": self.counts_by_reason,
            "bad_utterances": [
                {"id": item.id, "path": str(item.path), "reason": item.reason, "message": item.message}
                for item in self.bad
            ],
            "longer_than_manifest": [
                {
                    "id": item.id,
                    "path": str(item.path),
                    "manifest_duration": item.manifest_duration,
                    "audio_duration": item.audio_duration,
                }
                for item in self.longer_than_manifest
            ],
            "sample_rates": {str(rate): count for rate, count in sorted(self.sample_rates.items())},
        }

    def format(self) -> str:
        """A readable report: counts, then one line per bad file (at most 50 listed)."""
        rates = ", ".join(f"{rate} Hz: {count}" for rate, count in sorted(self.sample_rates.items())) or "none read"
        lines = [f"{self.manifest}: {self.utterances} utterances checked (sample rates {rates})"]
        if self.is_clean:
            lines.append("no bad audio found")
        else:
            counts = ", ".join(f"{reason} {count}" for reason, count in self.counts_by_reason.items())
            lines.append(f"{len(self.bad)} bad: {counts}")
            lines += [f"  {item.id}: {item.message}" for item in self.bad[:_REPORT_LISTS_AT_MOST]]
            if len(self.bad) > _REPORT_LISTS_AT_MOST:
                lines.append(f"  ... and {len(self.bad) - _REPORT_LISTS_AT_MOST} more (all are in the JSON summary)")
        if self.longer_than_manifest:
            lines.append(f"{len(self.longer_than_manifest)} file(s) hold more audio than their manifest duration says:")
            lines += [
                f"  {item.id}: {item.path}: {item.audio_duration:.3f} s, manifest says {item.manifest_duration:.3f} s"
                for item in self.longer_than_manifest[:_REPORT_LISTS_AT_MOST]
            ]
        return "\n".join(lines)


def _file_rate(path: Path) -> int:
    try:
        return soundfile.info(path).samplerate
    except (RuntimeError, OSError) as error:
        raise cannot_open(path, error) from None


def _decode(
    entry: ManifestEntry, rate: int, resample: bool, mono: MonoPolicy, min_duration: float
) -> float | None:
    """Decode one utterance at ``rate``; return its seconds (None for a segment entry).

    Raises :class:`BadAudio` as training would. A whole file is decoded to its end, so that
    audio longer than the manifest says can be reported too; one shorter than its manifest
    duration is ``truncated``, as in training.
    """
    options = {"resample": resample, "mono": mono, "min_duration": min_duration}
    if entry.offset is not None:
        load_audio(entry.audio, rate, entry.offset, entry.duration, **options)
        return None
    seconds = load_audio(entry.audio, rate, **options).shape[0] / rate
    if seconds < entry.duration - TRUNCATION_TOLERANCE_S:
        raise BadAudio(
            entry.audio, "truncated",
            f"shorter than its manifest entry: {seconds:.3f} s of audio where {entry.duration:.3f} s were expected",
        )
    return seconds


def check_manifest(
    manifest: str | Path,
    sample_rate: int | None = None,
    resample: bool = True,
    mono: MonoPolicy = "mix",
    min_duration: float = 0.0,
) -> ManifestReport:
    """Decode every utterance of ``manifest`` with :func:`load_audio`; report the bad ones.

    The options mean what the data options of a recipe mean. ``sample_rate=None`` takes
    each file's own rate, so a wrong rate is never reported; with ``resample=False`` and a
    ``sample_rate``, other rates are ``wrong_rate``. A manifest duration longer than the audio
    is ``truncated`` (bad), as is a WAV file holding less data than its header declares; a
    shorter one is listed in ``longer_than_manifest`` (not bad). Missing files are
    ``not_found``; NaN or infinite samples ``non_finite``; float samples far outside [-1, 1]
    ``out_of_range``. A missing or malformed manifest raises :class:`DataError`.
    """
    if sample_rate is not None and (not isinstance(sample_rate, int) or sample_rate <= 0):
        raise ValueError(f"sample_rate must be a positive int or None, got {sample_rate!r}")
    if mono not in ("mix", "first", "error"):
        raise ValueError(f"mono must be 'mix', 'first' or 'error', got {mono!r}")
    if min_duration < 0:
        raise ValueError(f"min_duration must be >= 0 seconds, got {min_duration!r}")
    entries = read_manifest(manifest)
    bad: list[BadUtterance] = []
    longer: list[DurationMismatch] = []
    sample_rates: collections.Counter[int] = collections.Counter()
    for entry in progress(entries, True, f"checking {Path(manifest).name}"):
        try:
            file_rate = _file_rate(entry.audio)
            sample_rates[file_rate] += 1
            # Resampling cannot make a file bad, so unless it is off, decoding at the file's own
            # rate finds the same problems without its cost (min_duration counts file-rate samples).
            rate = sample_rate if sample_rate is not None and not resample else file_rate
            seconds = _decode(entry, rate, resample, mono, min_duration)
        except BadAudio as error:
            bad.append(BadUtterance(entry.id, entry.audio, error.reason, str(error)))
            continue
        if seconds is not None and seconds > entry.duration + TRUNCATION_TOLERANCE_S:
            longer.append(DurationMismatch(entry.id, entry.audio, entry.duration, seconds))
    options = {"sample_rate": sample_rate, "resample": resample, "mono": mono, "min_duration": min_duration}
    return ManifestReport(Path(manifest), len(entries), bad, longer, dict(sample_rates), options)
