"""Connected digits: a small speech-recognition corpus generated from FSDD recordings.

Each utterance joins 2-7 FSDD recordings of ONE speaker (digits drawn at random) with
random silences between them; its transcript is the digit words, e.g. ``"three one four"``.
Recognition recipes (CTC, attention) get real speech, a few minutes to train on, and no
download beyond FSDD itself.

Splits use disjoint FSDD takes, so no recording is in two splits: ``train`` = takes 10-49,
``valid`` = takes 5-9 (carved from FSDD's training takes, as in prepare_fsdd), ``test`` =
takes 0-4 (FSDD's official test takes). Within a split, each recording is reused by many
utterances (the test split has 300 recordings for 500 utterances of ~4.5 digits each).

Silences are digital zeros: between two digits, uniform in ``[min_silence, max_silence]``;
before the first and after the last digit, uniform in ``[0, min_silence]`` (a short lead-in
and tail, as a real recording has). The source samples are copied unchanged; audio is
16-bit PCM WAV, 8 kHz, mono.

Layout of ``out_dir``::

    corpus.json                          parameters, source fingerprint, counts; written LAST
    train.jsonl  valid.jsonl  test.jsonl manifests: id, audio, duration, text, speaker
    segments/<split>.jsonl               {"id", "segments": [{"source", "start", "end"}]} in samples
    audio/<split>/<id>.wav
    README.md                            license (CC BY-SA 4.0, as FSDD) and credit

Determinism: the bytes are a function of (seed, sizes, options, source files). Each split
draws from its own ``numpy.random.default_rng([seed, split number])``, one utterance after
the other, so a split's first N utterances do not depend on the split sizes.

Crash safety: ``corpus.json`` is written last (atomically, after every audio file is
fsynced). A folder with a matching ``corpus.json`` is reused as is; anything else that
this module wrote (an interrupted run, other parameters) is deleted and regenerated; a
folder holding anything else is refused. A lock file serialises concurrent callers
(e.g. several ranks), so the later ones find the corpus ready.

Example (about a second)::

    >>> import tempfile
    >>> from cadence.data.manifest import read_manifest
    >>> paths = prepare_connected_digits(None, tempfile.mkdtemp(), sizes=(5, 3, 3))
    >>> len(read_manifest(paths["test"]))
    3
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from cadence.version import __version__
from cadence.corpora.fsdd import _RECORDING_NAME, DIGIT_WORDS, FSDD_TEST_TAKES, find_fsdd
from cadence.corpora.generated_folder import GeneratedFolder
from cadence.data.manifest import ManifestEntry, write_manifest
from cadence.runtime.files import cache_dir, strict_json, write_bytes_atomic, writing
from cadence.runtime.logs import progress
from cadence.errors import DataError

__all__ = [
    "CONNECTED_DIGITS_SAMPLE_RATE",
    "CONNECTED_DIGITS_SPLITS",
    "CONNECTED_DIGITS_TAKES",
    "connected_digits_folder_name",
    "default_cache_dir",
    "prepare_connected_digits",
]

logger = logging.getLogger("cadence")

CONNECTED_DIGITS_SAMPLE_RATE = 8000
CONNECTED_DIGITS_SPLITS = ("train", "valid", "test")
CONNECTED_DIGITS_TAKES = {"train": range(10, 50), "valid": range(5, 10), "test": FSDD_TEST_TAKES}
# Bump when the generation algorithm changes, so that copies made by the old one are regenerated.
_FORMAT_VERSION = 1
_DESCRIPTION_FILE = "corpus.json"
_OWN_NAMES = frozenset({"README.md", "audio", "segments"} | {f"{split}.jsonl" for split in CONNECTED_DIGITS_SPLITS})
_README = """\
# Connected digits (generated from FSDD by cadence)

Parameters and the fingerprint of the source recordings: corpus.json.
Each utterance joins FSDD recordings of one speaker with silences between them.

License: Creative Commons Attribution-ShareAlike 4.0 International (CC BY-SA 4.0), as FSDD.
Credit: Zohar Jackson and the contributors of the Free Spoken Digit Dataset
(https://github.com/Jakobovski/free-spoken-digit-dataset).
"""


# ---------------------------------------------------------------------------- parameters


def _check_parameters(
    seed: int, sizes: Sequence[int], min_digits: int, max_digits: int, min_silence: float, max_silence: float
) -> dict[str, Any]:
    """Validate the options and return them as the JSON-able record kept in corpus.json."""

    def is_int(value: Any) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    sizes = tuple(sizes)
    if len(sizes) != 3 or not all(is_int(size) and size >= 1 for size in sizes):
        raise DataError(f"sizes must be three utterance counts >= 1 (train, valid, test), got {sizes!r}")
    if not is_int(seed) or seed < 0:
        raise DataError(f"seed must be an int >= 0, got {seed!r}")
    if not (is_int(min_digits) and is_int(max_digits) and 1 <= min_digits <= max_digits):
        raise DataError(
            f"need 1 <= min_digits <= max_digits, got min_digits={min_digits!r} max_digits={max_digits!r}"
        )
    if not 0 <= min_silence <= max_silence:
        raise DataError(
            "need 0 <= min_silence <= max_silence (seconds), "
            f"got min_silence={min_silence!r} max_silence={max_silence!r}"
        )
    return {
        "format": _FORMAT_VERSION,
        "seed": int(seed),
        "sizes": {split: int(size) for split, size in zip(CONNECTED_DIGITS_SPLITS, sizes)},
        "min_digits": int(min_digits),
        "max_digits": int(max_digits),
        "min_silence": float(min_silence),
        "max_silence": float(max_silence),
        "sample_rate": CONNECTED_DIGITS_SAMPLE_RATE,
        "takes": {split: [takes.start, takes.stop - 1] for split, takes in CONNECTED_DIGITS_TAKES.items()},
    }


def connected_digits_folder_name(
    seed: int = 0,
    sizes: Sequence[int] = (4000, 500, 500),
    min_digits: int = 2,
    max_digits: int = 7,
    min_silence: float = 0.05,
    max_silence: float = 0.25,
) -> str:
    """A folder name that identifies the parameters, so that recipes can share one copy.

    >>> connected_digits_folder_name(seed=0, sizes=(4000, 500, 500)).startswith("seed0-4000-500-500-")
    True
    """
    parameters = _check_parameters(seed, sizes, min_digits, max_digits, min_silence, max_silence)
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode("utf-8")).hexdigest()
    counts = "-".join(str(size) for size in parameters["sizes"].values())
    return f"seed{parameters['seed']}-{counts}-{digest[:10]}"


def default_cache_dir() -> Path:
    """``connected-digits`` in cadence's cache (:func:`cadence.runtime.files.cache_dir`)."""
    return cache_dir("connected-digits")


# ---------------------------------------------------------------------------- sources


def _scan_sources(root: Path) -> tuple[dict[str, dict[int, dict[int, Path]]], str, int]:
    """``({speaker: {digit: {take: path}}}, fingerprint, count)`` of FSDD's recordings.

    The fingerprint hashes file names and sizes: cheap enough to check on every call, and
    it changes when recordings are added, removed or replaced by different ones.
    """
    recordings: dict[str, dict[int, dict[int, Path]]] = {}
    digest = hashlib.sha256()
    paths = sorted((root / "recordings").glob("*.wav"), key=lambda path: path.name)
    for path in paths:
        match = _RECORDING_NAME.match(path.name)
        if match is None:
            raise DataError(
                f"{path}: not an FSDD recording name, expected {{digit}}_{{speaker}}_{{take}}.wav; "
                "move the file out of recordings/"
            )
        digest.update(f"{path.name}\t{path.stat().st_size}\n".encode("utf-8"))
        by_digit = recordings.setdefault(match["speaker"], {})
        by_digit.setdefault(int(match["digit"]), {})[int(match["take"])] = path
    return recordings, digest.hexdigest(), len(paths)


def _split_pools(recordings: dict[str, dict[int, dict[int, Path]]], split: str) -> dict[str, list[list[Path]]]:
    """``{speaker: [paths of digit 0, ..., paths of digit 9]}`` restricted to the split's takes."""
    takes = CONNECTED_DIGITS_TAKES[split]
    pools: dict[str, list[list[Path]]] = {}
    for speaker in sorted(recordings):
        pools[speaker] = []
        for digit in range(10):
            by_take = recordings[speaker].get(digit, {})
            paths = [by_take[take] for take in sorted(by_take) if take in takes]
            if not paths:
                raise DataError(
                    f"FSDD has no recording of digit {digit} by {speaker!r} with a take in "
                    f"{takes.start}-{takes.stop - 1} (the {split} takes); restore the full FSDD recordings"
                )
            pools[speaker].append(paths)
    return pools


class _SourceAudio:
    """Source recordings as int16 arrays, each read once, checked to be 8 kHz mono audio."""

    def __init__(self) -> None:
        self._samples: dict[Path, np.ndarray] = {}

    def __getitem__(self, path: Path) -> np.ndarray:
        if path not in self._samples:
            try:
                samples, rate = soundfile.read(path, dtype="int16")
            except (RuntimeError, OSError) as error:
                raise DataError(f"{path}: cannot read the recording ({error}); restore it from FSDD") from None
            if rate != CONNECTED_DIGITS_SAMPLE_RATE or samples.ndim != 1 or samples.size == 0:
                raise DataError(
                    f"{path}: expected non-empty 8000 Hz mono audio, got {rate} Hz, shape {samples.shape}; "
                    "restore the file from FSDD"
                )
            self._samples[path] = samples
        return self._samples[path]


# ---------------------------------------------------------------------------- generation


def _seconds_to_samples(seconds: float) -> int:
    return round(seconds * CONNECTED_DIGITS_SAMPLE_RATE)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    # Encoded in memory first: soundfile writing to a file that fails (disk full) prints a
    # traceback per callback instead of raising.
    encoded = io.BytesIO()
    soundfile.write(encoded, samples, CONNECTED_DIGITS_SAMPLE_RATE, subtype="PCM_16", format="WAV")
    # fsync: corpus.json, written after this, must never describe audio still in a cache.
    with writing(path), open(path, "wb") as handle:
        handle.write(encoded.getbuffer())
        handle.flush()
        os.fsync(handle.fileno())


def _generate_split(
    split: str, parameters: dict[str, Any], pools: dict[str, list[list[Path]]], sources: _SourceAudio, out_dir: Path
) -> tuple[list[ManifestEntry], list[dict[str, Any]]]:
    """Write the split's audio; return its manifest entries and segment records."""
    split_number = CONNECTED_DIGITS_SPLITS.index(split)
    generator = np.random.default_rng([parameters["seed"], split_number])
    speakers = sorted(pools)
    audio_dir = out_dir / "audio" / split
    audio_dir.mkdir(parents=True, exist_ok=True)
    entries, segment_records = [], []
    count_of_split = parameters["sizes"][split]
    for index in progress(range(count_of_split), True, f"connected digits: {split}", total=count_of_split):
        # The order of the draws is part of the format: changing it changes every corpus.
        speaker = speakers[generator.integers(len(speakers))]
        count = int(generator.integers(parameters["min_digits"], parameters["max_digits"] + 1))
        digits = generator.integers(0, 10, size=count)
        recordings = [pools[speaker][digit][generator.integers(len(pools[speaker][digit]))] for digit in digits]
        gaps = generator.uniform(parameters["min_silence"], parameters["max_silence"], size=count - 1)
        lead_in, tail = generator.uniform(0.0, parameters["min_silence"], size=2)

        pieces = [np.zeros(_seconds_to_samples(lead_in), dtype=np.int16)]
        segments, position = [], pieces[0].size
        for number, recording in enumerate(recordings):
            if number > 0:
                pieces.append(np.zeros(_seconds_to_samples(gaps[number - 1]), dtype=np.int16))
                position += pieces[-1].size
            pieces.append(sources[recording])
            segments.append({"source": recording.stem, "start": position, "end": position + pieces[-1].size})
            position += pieces[-1].size
        pieces.append(np.zeros(_seconds_to_samples(tail), dtype=np.int16))
        samples = np.concatenate(pieces)

        utterance_id = f"{split}-{index:05d}"
        audio_path = audio_dir / f"{utterance_id}.wav"
        _write_wav(audio_path, samples)
        entries.append(
            ManifestEntry(
                id=utterance_id,
                audio=audio_path,
                duration=samples.size / CONNECTED_DIGITS_SAMPLE_RATE,
                text=" ".join(DIGIT_WORDS[digit] for digit in digits),
                speaker=speaker,
            )
        )
        segment_records.append({"id": utterance_id, "segments": segments})
    return entries, segment_records


# ---------------------------------------------------------------------------- the folder


def prepare_connected_digits(
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    sizes: Sequence[int] = (4000, 500, 500),
    min_digits: int = 2,
    max_digits: int = 7,
    min_silence: float = 0.05,
    max_silence: float = 0.25,
) -> dict[str, Path]:
    """Generate (or reuse) the connected-digits corpus; return ``{"train"|"valid"|"test": manifest}``.

    ``root``: the FSDD folder, found with :func:`~cadence.corpora.fsdd.find_fsdd` (None: the
    usual search, downloading if need be). ``out_dir`` (None: :func:`default_cache_dir` /
    :func:`connected_digits_folder_name`). ``sizes``: utterances in train, valid, test.
    ``min_digits``/``max_digits``: digits per utterance (inclusive). ``min_silence``/
    ``max_silence``: seconds between digits. See the module docstring for splits and layout.
    """
    parameters = _check_parameters(seed, sizes, min_digits, max_digits, min_silence, max_silence)
    if out_dir is None:
        out_dir = default_cache_dir() / connected_digits_folder_name(
            seed, sizes, min_digits, max_digits, min_silence, max_silence
        )
    out_dir = Path(os.path.abspath(out_dir))
    root = find_fsdd(root)
    recordings, fingerprint, recording_count = _scan_sources(root)
    # Before anything is deleted: a source set that cannot make every split is refused first.
    pools = {split: _split_pools(recordings, split) for split in CONNECTED_DIGITS_SPLITS}
    manifests = {split: out_dir / f"{split}.jsonl" for split in CONNECTED_DIGITS_SPLITS}
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder; choose another output folder")
    folder = GeneratedFolder(out_dir, "connected-digits", "connected digits", _DESCRIPTION_FILE, _OWN_NAMES)
    if out_dir.is_dir():
        folder.refuse_foreign_content()  # before the lock file, which would litter a foreign folder
    out_dir.mkdir(parents=True, exist_ok=True)

    with folder.lock():
        if folder.is_ready(parameters, fingerprint, [path.name for path in manifests.values()]):
            logger.info("connected digits: reusing %s (corpus.json matches)", out_dir)
            return manifests
        folder.clear()
        started = time.perf_counter()
        sources = _SourceAudio()
        utterances, seconds = {}, {}
        for split in CONNECTED_DIGITS_SPLITS:
            entries, segment_records = _generate_split(split, parameters, pools[split], sources, out_dir)
            write_manifest(manifests[split], entries)
            lines = "".join(strict_json(record) + "\n" for record in segment_records)
            write_bytes_atomic(out_dir / "segments" / f"{split}.jsonl", lines.encode("utf-8"))
            utterances[split] = len(entries)
            seconds[split] = round(sum(entry.duration for entry in entries), 3)
        write_bytes_atomic(out_dir / "README.md", _README.encode("utf-8"))
        description = {
            "corpus": "connected-digits",
            "parameters": parameters,
            "source": {"root": str(root), "recordings": recording_count, "fingerprint": fingerprint},
            "utterances": utterances,
            "seconds": seconds,
            "cadence_version": __version__,
        }
        folder.write_description(description)
    logger.info(
        "connected digits: %s utterances (%.1f h) in %s, generated in %.1f s",
        sum(utterances.values()), sum(seconds.values()) / 3600, out_dir, time.perf_counter() - started,
    )
    return manifests
