"""Free Spoken Digit Dataset (FSDD): find it, download it, write its manifests.

FSDD holds 3,000 recordings ``recordings/{digit}_{speaker}_{take}.wav`` (8 kHz mono, 16-bit;
6 speakers x 10 digits x 50 takes). Takes 0-4 are the official test set. It is licensed
CC BY-SA 4.0; credit: Zohar Jackson and the FSDD contributors.

Typical use (the ``cadence data`` CLI does the same)::

    root = find_fsdd()                       # local copy, or a one-time download
    paths = prepare_fsdd(root, "data/fsdd")  # {"digits": {"train": ..., "valid": ..., "test": ...}, "speakers": {...}}
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from cadence.data.audio import audio_header
from cadence.data.manifest import ManifestEntry, write_labels, write_manifest
from cadence.errors import DataError
from cadence.runtime.files import cache_dir
from cadence.runtime.logs import DownloadProgress

__all__ = [
    "DIGIT_WORDS",
    "FSDD_ARCHIVE_URL",
    "FSDD_COMMIT",
    "FSDD_FILE_COUNT",
    "FSDD_TASKS",
    "FSDD_TEST_TAKES",
    "download_fsdd",
    "find_fsdd",
    "prepare_fsdd",
]

logger = logging.getLogger("cadence")

FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
FSDD_ARCHIVE_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.tar.gz"
FSDD_FILE_COUNT = 3000
FSDD_TASKS = ("digits", "speakers")
FSDD_TEST_TAKES = range(0, 5)
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_RECORDING_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[A-Za-z0-9-]+)_(?P<take>[0-9]+)\.wav$")
_HOW_TO_FIX = (
    "pass a folder holding FSDD's recordings/*.wav with --root (data.root in a recipe), "
    "or set CADENCE_FSDD_ROOT to it"
)
_README = """\
# Free Spoken Digit Dataset (FSDD)

Downloaded by cadence from {url}
(the Jakobovski/free-spoken-digit-dataset repository, commit {commit}); only recordings/*.wav kept.

License: Creative Commons Attribution-ShareAlike 4.0 International (CC BY-SA 4.0).
Credit: Zohar Jackson and the FSDD contributors.
"""


# ---------------------------------------------------------------------------- finding


def _has_recordings(folder: Path) -> bool:
    recordings = folder / "recordings"
    return recordings.is_dir() and next(recordings.glob("*.wav"), None) is not None


def _require_fsdd(folder: Path, source: str) -> Path:
    if not _has_recordings(folder):
        raise DataError(
            f"{folder} (from {source}) is not an FSDD folder: expected {folder / 'recordings'} to hold "
            f"the {{digit}}_{{speaker}}_{{take}}.wav files; {_HOW_TO_FIX}"
        )
    return Path(os.path.abspath(folder))


def _shared_candidates() -> list[Path]:
    """The project's shared copy: beside the checkout, or beside the current directory."""
    checkout_parent = Path(__file__).resolve().parents[3]  # <checkout>/cadence/corpora/fsdd.py
    return [checkout_parent / "shared" / "data" / "fsdd", Path.cwd().parent / "shared" / "data" / "fsdd"]




def find_fsdd(root: str | Path | None = None) -> Path:
    """Return an FSDD folder (one holding ``recordings/*.wav``), downloading it if need be.

    Looks, in order, at: ``root``; the ``CADENCE_FSDD_ROOT`` environment variable; the
    project's ``shared/data/fsdd`` beside the checkout (or beside the current directory);
    the download cache ``$XDG_CACHE_HOME/cadence/fsdd`` (``~/.cache/cadence/fsdd``); and
    finally downloads into that cache. An explicit ``root`` or ``CADENCE_FSDD_ROOT`` that
    does not hold FSDD is an error, never skipped.
    """
    if root is not None:
        return _require_fsdd(Path(root), "the given root")
    from_environment = os.environ.get("CADENCE_FSDD_ROOT")
    if from_environment:
        return _require_fsdd(Path(from_environment), "CADENCE_FSDD_ROOT")
    for candidate in _shared_candidates():
        if _has_recordings(candidate):
            return candidate.resolve()
    cache = cache_dir("fsdd")
    if _has_recordings(cache):
        return cache
    return download_fsdd(cache)


# ---------------------------------------------------------------------------- downloading


def _download(url: str, target: Path) -> None:
    logger.info("downloading FSDD from %s", url)
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as handle:
        total = int(response.headers.get("Content-Length") or 0)
        with DownloadProgress("downloading FSDD", total) as download:
            while block := response.read(1 << 20):
                handle.write(block)
                download.add(len(block))
        handle.flush()
        os.fsync(handle.fileno())
    logger.info("downloaded %.1f MB from %s", download.received / 1e6, url)


def _extract_recordings(archive: Path, recordings: Path) -> int:
    """Copy the archive's ``<top>/recordings/*.wav`` regular files into ``recordings``; nothing else."""
    recordings.mkdir(parents=True)
    count = 0
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if member.name.startswith(("/", "\\")) or ".." in parts:
                logger.warning("FSDD archive: skipping unsafe member %r (absolute path or '..')", member.name)
                continue
            if len(parts) != 3 or parts[1] != "recordings" or not parts[2].endswith(".wav"):
                continue
            if not member.isfile():
                logger.warning("FSDD archive: skipping %r, not a regular file (links are never extracted)", member.name)
                continue
            if not _RECORDING_NAME.match(parts[2]):
                logger.warning("FSDD archive: skipping %r, not a {digit}_{speaker}_{take}.wav name", member.name)
                continue
            source = tar.extractfile(member)
            # "xb": a repeated name in the archive fails rather than silently overwriting.
            with source, open(recordings / parts[2], "xb") as target:
                shutil.copyfileobj(source, target)
                target.flush()
                os.fsync(target.fileno())
            count += 1
    return count


def download_fsdd(
    destination: str | Path,
    url: str = FSDD_ARCHIVE_URL,
    expected_files: int | None = FSDD_FILE_COUNT,
) -> Path:
    """Download FSDD's recordings into ``destination`` (created atomically) and return it.

    ``url`` may point at a mirror or a local ``file://`` archive of the repository.
    Only ``<top>/recordings/*.wav`` regular files are extracted; absolute paths, ``..`` and
    links are skipped. The count of wav files must equal ``expected_files`` (None: any).
    A README with the license and credit is written beside ``recordings/``.
    If ``destination`` already holds recordings, nothing is downloaded.
    """
    destination = Path(os.path.abspath(destination))
    if _has_recordings(destination):
        logger.info("FSDD is already in %s; not downloading", destination)
        return destination
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise DataError(
            f"{destination}: cannot download FSDD here, the path exists and is not an empty folder; "
            f"remove it, or {_HOW_TO_FIX}"
        )
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.partial-"))
    except OSError as error:
        raise DataError(
            f"{destination}: cannot create a folder to download FSDD into ({error}); {_HOW_TO_FIX}"
        ) from None
    try:
        archive = staging / "archive.tar.gz"
        _download(url, archive)
        count = _extract_recordings(archive, staging / "fsdd" / "recordings")
        if expected_files is not None and count != expected_files:
            raise DataError(f"the archive at {url} holds {count} recordings/*.wav files, expected {expected_files}")
        readme = _README.format(url=url, commit=FSDD_COMMIT)
        (staging / "fsdd" / "README.md").write_text(readme, encoding="utf-8")
        try:
            if destination.is_dir():
                destination.rmdir()  # empty, checked above
            os.rename(staging / "fsdd", destination)
        except OSError:
            if not _has_recordings(destination):  # another process (e.g. another rank) won the race: fine
                raise
    except (DataError, OSError, urllib.error.URLError, tarfile.TarError, EOFError, zlib.error) as error:
        raise DataError(f"could not download FSDD into {destination}: {error}; {_HOW_TO_FIX}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("FSDD: %d recordings in %s", count, destination)
    return destination


# ---------------------------------------------------------------------------- manifests


def _check_valid_takes(valid_takes: Iterable[int]) -> frozenset[int]:
    takes = list(valid_takes)
    if not takes or not all(isinstance(take, int) and not isinstance(take, bool) and take >= 0 for take in takes):
        raise DataError(f"valid_takes must be a non-empty list of take numbers >= 0, got {takes!r}")
    test_takes = sorted(set(takes) & set(FSDD_TEST_TAKES))
    if test_takes:
        raise DataError(
            f"valid_takes {test_takes} are official test takes (0-4); "
            "choose validation takes among the training takes (5-49)"
        )
    return frozenset(takes)


def _scan_recordings(root: Path) -> list[tuple[Path, re.Match[str], float]]:
    """``(path, name match, duration in seconds)`` for each recording, sorted by id."""
    found = []
    for path in sorted((root / "recordings").glob("*.wav"), key=lambda path: path.stem):
        match = _RECORDING_NAME.match(path.name)
        if match is None:
            raise DataError(
                f"{path}: not an FSDD recording name, expected {{digit}}_{{speaker}}_{{take}}.wav; "
                "move the file out of recordings/"
            )
        info = audio_header(path, "restore the file from FSDD or delete it")
        if info.frames == 0:
            raise DataError(f"{path}: holds no audio samples; restore the file from FSDD or delete it")
        found.append((path, match, info.frames / info.samplerate))
    return found


def prepare_fsdd(
    root: str | Path | None,
    out_dir: str | Path,
    valid_takes: Iterable[int] = range(5, 10),
) -> dict[str, dict[str, Path]]:
    """Write FSDD manifests for each task in :data:`FSDD_TASKS`; return their paths.

    For each task, ``out_dir/<task>/{train,valid,test}.jsonl`` and ``out_dir/<task>/labels.json``
    (the class names: digits in counting order, speakers sorted; a name's position is its class index). Splits: ``test`` = takes
    0-4 (the official test set), ``valid`` = takes in ``valid_takes`` (carved out of the
    training takes), ``train`` = the other takes. Labels: ``digits`` = the digit word
    ("zero".."nine"), ``speakers`` = the speaker's name. Every entry also carries ``speaker``
    and ``text`` (the digit word). Entries are sorted by id, so the files are byte-identical
    from run to run. ``root=None`` uses :func:`find_fsdd`.

    Returns ``{task: {"train": path, "valid": path, "test": path}}``.
    """
    root = find_fsdd(root)
    validation_takes = _check_valid_takes(valid_takes)
    recordings = _scan_recordings(root)
    out_dir = Path(out_dir)
    written: dict[str, dict[str, Path]] = {}
    for task in FSDD_TASKS:
        splits: dict[str, list[ManifestEntry]] = {"train": [], "valid": [], "test": []}
        for path, match, duration in recordings:
            take, word, speaker = int(match["take"]), DIGIT_WORDS[int(match["digit"])], match["speaker"]
            split = "test" if take in FSDD_TEST_TAKES else "valid" if take in validation_takes else "train"
            label = word if task == "digits" else speaker
            splits[split].append(
                ManifestEntry(id=path.stem, audio=path, duration=duration, text=word, speaker=speaker, label=label)
            )
        written[task] = {}
        for split, entries in splits.items():
            if not entries:
                raise DataError(
                    f"{root}: no recordings fall in the {split!r} split "
                    f"(valid_takes={sorted(validation_takes)}); check the takes"
                )
            written[task][split] = out_dir / task / f"{split}.jsonl"
            write_manifest(written[task][split], entries)
        # Digit classes in counting order ("zero" is class 0); speakers alphabetically.
        labels = list(DIGIT_WORDS) if task == "digits" else sorted({entry.label for entries in splits.values() for entry in entries})
        write_labels(out_dir / task / "labels.json", labels)
        counts = ", ".join(f"{split} {len(entries)}" for split, entries in splits.items())
        logger.info("FSDD %s manifests in %s: %s utterances, %d classes", task, out_dir / task, counts, len(labels))
    return written
