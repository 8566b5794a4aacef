"""LibriSpeech and Mini LibriSpeech: download the subsets, extract them safely, write manifests.

LibriSpeech is about 1,000 hours of read English speech from LibriVox audiobooks, 16 kHz
FLAC, cut into utterances with transcripts (Panayotov, Chen, Povey and Khudanpur,
"LibriSpeech: an ASR corpus based on public domain audio books", ICASSP 2015). It is
published by OpenSLR under the Creative Commons Attribution 4.0 licence (CC BY 4.0):
resource 12 holds the subsets (dev-clean, dev-other, test-clean, test-other,
train-clean-100, train-clean-360, train-other-500), resource 31 holds Mini LibriSpeech
(train-clean-5, dev-clean-2), a few hours drawn from them for quick experiments. Credit
the authors above when you use it.

Layout of ``root`` (the folder :func:`prepare_librispeech` fills)::

    README.md                            source, licence (CC BY 4.0) and credit
    downloads/<subset>.tar.gz            while downloading: <subset>.tar.gz.part (kept to resume)
    LibriSpeech/SPEAKERS.TXT  CHAPTERS.TXT  BOOKS.TXT  LICENSE.TXT  README.TXT
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    manifests/<subset>.jsonl             id, audio, duration, text, speaker

Manifest lines hold the utterance id (``1272-128104-0000``), the audio path relative to the
manifest, the duration read from the FLAC header, the chapter transcript's text (upper case,
as published) and the speaker id. A manifest line has no field for the speaker's sex; read it
from SPEAKERS.TXT with :func:`librispeech_speakers`.

Why each step is careful:

- Downloads go to ``<subset>.tar.gz.part``; an interrupted one (or a second call after a
  crash) continues with an HTTP Range request where the server allows it and starts again
  where it does not. The archive gets its final name only once its md5 matches the sum
  OpenSLR publishes, so a finished archive is never fetched twice.
- Extraction writes only regular files of LibriSpeech's layout. An absolute path, a ``..``,
  a link or a device in the archive, or a truncated gzip, refuses the whole archive. Files
  are extracted into a staging folder, checked (every FLAC readable, every utterance with a
  transcript), then moved into place by rename: a subset folder is complete or absent.
- A subset whose folder and manifest exist is reused as is (nothing downloaded or read);
  one whose folder exists without a manifest (an earlier crash, or a copy you extracted
  yourself) gets its manifest written, without downloading.
- A lock file serialises callers (e.g. several ranks), so the later ones find it ready.

Example (no network: the URL a subset comes from)::

    >>> librispeech_url("dev-clean-2")
    'https://www.openslr.org/resources/31/dev-clean-2.tar.gz'
    >>> librispeech_url("test-clean", url="file:///data/mirror/")
    'file:///data/mirror/12/test-clean.tar.gz'
    >>> LIBRISPEECH_MD5["dev-clean"]
    '42e2234ba48799c1f50f24a7926300a1'

Typical use::

    manifests = prepare_librispeech(["train-clean-5", "dev-clean-2"], "data/librispeech")
    # {"train-clean-5": Path("data/librispeech/manifests/train-clean-5.jsonl"), ...}
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import gzip
import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

from cadence.data.audio import audio_header
from cadence.data.manifest import ManifestEntry, read_manifest, write_manifest
from cadence.errors import ConfigError, DataError
from cadence.runtime.files import write_bytes_atomic, writing
from cadence.runtime.logs import DownloadProgress

try:  # POSIX; elsewhere concurrent preparation of one root is simply not guarded
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LIBRISPEECH_MD5",
    "LIBRISPEECH_RESOURCES",
    "LIBRISPEECH_SUBSETS",
    "LibriSpeechSpeaker",
    "OPENSLR_URL",
    "download_librispeech",
    "librispeech_speakers",
    "librispeech_url",
    "prepare_librispeech",
]

logger = logging.getLogger("cadence")

OPENSLR_URL = "https://www.openslr.org/resources"
# The OpenSLR resource number of each subset: 31 is Mini LibriSpeech, 12 LibriSpeech.
LIBRISPEECH_RESOURCES = {
    "train-clean-5": 31, "dev-clean-2": 31,
    "dev-clean": 12, "dev-other": 12, "test-clean": 12, "test-other": 12,
    "train-clean-100": 12, "train-clean-360": 12, "train-other-500": 12,
}
LIBRISPEECH_SUBSETS = tuple(LIBRISPEECH_RESOURCES)
# The md5 sums OpenSLR publishes beside the archives (resources/12/md5sum.txt, resources/31/md5sum.txt).
LIBRISPEECH_MD5: dict[str, str | None] = {
    "train-clean-5": "5df7d4e78065366204ca6845bb08f490",
    "dev-clean-2": "6d7ab67ac6a1d2c993d050e16d61080d",
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
}

TOP_FOLDER = "LibriSpeech"
METADATA_FILES = ("SPEAKERS.TXT", "CHAPTERS.TXT", "BOOKS.TXT", "LICENSE.TXT", "README.TXT")
LOCK_FILE = ".lock"
_AUDIO_NAME = re.compile(r"^(?P<speaker>[0-9]+)-(?P<chapter>[0-9]+)-[0-9]+\.flac$")
_TRANSCRIPT_NAME = re.compile(r"^(?P<speaker>[0-9]+)-(?P<chapter>[0-9]+)\.trans\.txt$")
_CONTENT_RANGE = re.compile(r"^bytes (?P<start>[0-9]+)-[0-9]+/([0-9]+|\*)$")
_README = """\
# LibriSpeech

Prepared by cadence from OpenSLR: https://www.openslr.org/12 (LibriSpeech) and
https://www.openslr.org/31 (Mini LibriSpeech), or a mirror of them. Audio, transcripts and
the *.TXT files under LibriSpeech/ are as published; manifests/ was written by cadence.

License: Creative Commons Attribution 4.0 International (CC BY 4.0).
Credit: Vassil Panayotov, Guoguo Chen, Daniel Povey and Sanjeev Khudanpur, "LibriSpeech: an
ASR corpus based on public domain audio books", ICASSP 2015. The recordings come from the
LibriVox project.
"""


@dataclasses.dataclass(frozen=True)
class LibriSpeechSpeaker:
    """One line of SPEAKERS.TXT: ``sex`` is ``"F"`` or ``"M"``, ``subset`` the speaker's subset."""

    sex: str
    subset: str
    name: str


@dataclasses.dataclass(frozen=True)
class _Utterance:
    id: str
    relative: str  # path under LibriSpeech/<subset>/
    duration: float
    text: str
    speaker: str


# ---------------------------------------------------------------------------- arguments


def librispeech_url(subset: str, url: str = OPENSLR_URL) -> str:
    """The archive's URL under ``url``, a base laid out as OpenSLR's ``resources`` folder."""
    return f"{url.rstrip('/')}/{LIBRISPEECH_RESOURCES[_check_subset(subset)]}/{subset}.tar.gz"


def _check_subset(subset: str) -> str:
    if subset not in LIBRISPEECH_RESOURCES:
        close = difflib.get_close_matches(str(subset), LIBRISPEECH_SUBSETS, n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{subset!r} is not a LibriSpeech subset{suggestion}; choose among {', '.join(LIBRISPEECH_SUBSETS)}")
    return subset


def _check_subsets(subsets: str | Iterable[str]) -> list[str]:
    chosen = [subsets] if isinstance(subsets, str) else list(subsets)
    if not chosen:
        raise ConfigError(f"no LibriSpeech subset given; choose among {', '.join(LIBRISPEECH_SUBSETS)}")
    return list(dict.fromkeys(_check_subset(subset) for subset in chosen))


def _expected_md5(subset: str, md5s: Mapping[str, str | None] | None) -> str | None:
    """The sum to check: ``md5s[subset]`` when given (None: do not check), else the published one."""
    expected = md5s[subset] if md5s is not None and subset in md5s else LIBRISPEECH_MD5[subset]
    if expected is not None and not (isinstance(expected, str) and re.fullmatch(r"[0-9a-fA-F]{32}", expected)):
        raise ConfigError(f"md5s[{subset!r}] must be 32 hexadecimal digits or None, got {expected!r}")
    return None if expected is None else expected.lower()


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise preparers of ``root`` (e.g. several ranks): later ones find the work done."""
    with writing(root / LOCK_FILE):  # a read-only folder: a StorageError naming the file
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK_FILE, "a+b")
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file closes
            except OSError as error:  # e.g. a network file system without locks
                logger.warning("LibriSpeech: cannot lock %s (%s); prepare it once at a time", root, error)
        yield


# ---------------------------------------------------------------------------- downloading


def _open(url: str, start: int) -> tuple[http.client.HTTPResponse | None, int]:
    """The response for ``url`` from byte ``start``, and the byte it really starts at (0 or
    ``start``); ``(None, start)`` when the server says nothing lies beyond ``start``."""
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not start:
            raise
        # Range Not Satisfiable: the part is whole if the file's size ("bytes */SIZE") is its size.
        size = (error.headers.get("Content-Range") or "").rpartition("/")[2]
        error.close()
        return (None, start) if size == str(start) else _open(url, 0)
    content_range = _CONTENT_RANGE.match(response.headers.get("Content-Range") or "")
    # file:// responses carry no status at all; a server that ignores Range answers 200.
    if start and getattr(response, "status", None) == 206 and content_range and int(content_range["start"]) == start:
        return response, start
    if start:
        logger.info("%s: the server does not resume downloads; downloading from the beginning", url)
    return response, 0


def _fetch(url: str, part: Path) -> None:
    """Download ``url`` into ``part``, continuing what ``part`` already holds where the server allows."""
    held = part.stat().st_size if part.is_file() else 0
    try:
        response, start = _open(url, held)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise DataError(f"cannot download {url} ({error}); check the network, or pass url= a mirror of OpenSLR") from None
    if response is None:
        return  # the part already holds the whole file
    length = response.headers.get("Content-Length")
    total = start + int(length) if length and length.isdigit() else None
    stopped = None
    logger.info("downloading %s%s", url, f" from byte {start}" if start else "")
    with response:
        with writing(part):
            handle = open(part, "ab" if start else "wb")
        with handle, DownloadProgress(f"downloading {url.rsplit('/', 1)[-1]}", total, initial=start) as download:
            while True:
                try:
                    block = response.read(1 << 20)
                except (OSError, http.client.HTTPException) as error:  # the network, not the disk
                    stopped = error
                    break
                if not block:
                    break
                with writing(part):
                    handle.write(block)
                download.add(len(block))
    received = download.received
    if stopped is not None or (total is not None and received != total):
        cause = stopped or f"the server announced {total} bytes"
        raise DataError(
            f"downloading {url} stopped after {received / 1e6:.1f} MB ({cause}); the bytes received are kept in "
            f"{part}: run again to resume, or pass url= a mirror of OpenSLR"
        )


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # OpenSLR publishes md5 sums; it checks integrity, not trust
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _ensure_archive(subset: str, root: Path, url: str, expected: str | None) -> Path:
    """``root/downloads/<subset>.tar.gz``, downloaded (or resumed) unless already there; md5 checked."""
    archive = root / "downloads" / f"{subset}.tar.gz"
    source = librispeech_url(subset, url)
    if archive.is_file():
        if expected is not None and (actual := _md5(archive)) != expected:
            raise DataError(
                f"{archive}: md5 {actual} does not match {subset}'s expected {expected}; the archive is damaged: "
                "delete it and download again"
            )
        logger.info("LibriSpeech %s: using the archive already in %s", subset, archive)
    else:
        part = archive.with_name(archive.name + ".part")
        with writing(archive.parent):
            archive.parent.mkdir(parents=True, exist_ok=True)
        _fetch(source, part)
        if expected is not None and (actual := _md5(part)) != expected:
            part.unlink()  # resuming from wrong bytes could never succeed
            raise DataError(
                f"{source}: the downloaded archive's md5 is {actual}, {subset}'s expected sum is {expected}; "
                "the download was deleted: run again to download it afresh, or pass url= another mirror"
            )
        with writing(archive):
            os.replace(part, archive)
    if expected is None:
        logger.warning("LibriSpeech %s: %s was NOT verified (no md5 sum to check it against); pass md5s={%r: SUM} "
                       "to check it", subset, archive, subset)
    return archive


def download_librispeech(
    subsets: str | Iterable[str],
    root: str | Path,
    url: str = OPENSLR_URL,
    md5s: Mapping[str, str | None] | None = None,
) -> dict[str, Path]:
    """Download the subsets' archives into ``root/downloads``; return ``{subset: archive path}``.

    ``url`` is a base laid out as OpenSLR's ``resources`` folder (``<url>/12/dev-clean.tar.gz``):
    a mirror, or a ``file://`` folder. ``md5s`` overrides the published sums per subset
    (None: not verified, with a warning). An interrupted download resumes; a finished one is
    only checked.
    """
    chosen = _check_subsets(subsets)
    expected = {subset: _expected_md5(subset, md5s) for subset in chosen}
    root = Path(os.path.abspath(root))
    with _locked(root):
        return {subset: _ensure_archive(subset, root, url, expected[subset]) for subset in chosen}


# ---------------------------------------------------------------------------- extracting


def _damaged(archive: Path, problem: str) -> DataError:
    return DataError(f"{archive}: {problem}; the archive is damaged or not LibriSpeech's: delete it and download again")


def _destination(member: tarfile.TarInfo, subset: str, archive: Path) -> str | None:
    """Where a member goes under the top folder (``"<subset>/..."`` or a metadata file), or None: skipped."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or not parts:
        raise _damaged(archive, f"member {member.name!r} has an absolute path or '..'")
    if member.issym() or member.islnk():
        raise _damaged(archive, f"member {member.name!r} is a link (links are never extracted)")
    if member.isdir():
        return None  # folders are made as their files need them
    if not member.isfile():
        raise _damaged(archive, f"member {member.name!r} is not a regular file")
    if len(parts) == 2 and parts[0] == TOP_FOLDER and parts[1] in METADATA_FILES:
        return parts[1]
    if len(parts) == 5 and parts[:2] == (TOP_FOLDER, subset):
        speaker, chapter, name = parts[2:]
        match = _AUDIO_NAME.match(name) or _TRANSCRIPT_NAME.match(name)
        if match and (match["speaker"], match["chapter"]) == (speaker, chapter):
            return "/".join(parts[1:])
    logger.warning("%s: skipping %r, outside LibriSpeech/%s/<speaker>/<chapter>/", archive, member.name, subset)
    return None


# What a damaged archive raises while it is read: bad headers, a truncated or corrupt gzip stream.
_UNREADABLE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def _copy_member(source, target: Path, archive: Path) -> None:
    """Copy one member's bytes: read errors are the archive's fault, write errors the disk's."""
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        # "xb": a name repeated in the archive is refused, never silently overwritten.
        try:
            handle = open(target, "xb")
        except FileExistsError:
            raise _damaged(archive, f"it holds {target.name} twice") from None
    with handle:
        while True:
            try:
                block = source.read(1 << 20)
            except _UNREADABLE as error:
                raise _damaged(archive, f"it cannot be read to the end ({error or type(error).__name__})") from None
            if not block:
                return
            with writing(target):
                handle.write(block)


def _extract(archive: Path, subset: str, top: Path) -> int:
    """Write the archive's LibriSpeech files under ``top``; return how many FLAC files."""
    count = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                relative = _destination(member, subset, archive)
                if relative is not None:
                    with tar.extractfile(member) as source:
                        _copy_member(source, top / relative, archive)
                    count += relative.endswith(".flac")
    except _UNREADABLE as error:
        raise _damaged(archive, f"it cannot be read to the end ({error or type(error).__name__})") from None
    if count == 0:
        raise _damaged(archive, f"it holds no {TOP_FOLDER}/{subset}/<speaker>/<chapter>/*.flac file")
    return count


def _install(archive: Path, subset: str, root: Path) -> list[_Utterance]:
    """Extract into a staging folder, check every utterance, then rename into ``root/LibriSpeech``."""
    for stale in root.glob(f".{subset}.partial-*"):  # a killed run's (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    with writing(root):
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{subset}.partial-"))
    logger.info("LibriSpeech %s: extracting %s", subset, archive)
    try:
        count = _extract(archive, subset, staging)
        logger.info("LibriSpeech %s: %d FLAC files extracted from %s; checking them", subset, count, archive)
        utterances = _scan(staging / subset, "the archive is damaged: delete it and download again",
                           shown_as=f"{archive}: {TOP_FOLDER}/{subset}")
        # One sync for all files, not one fsync each (hundreds of thousands): what the rename
        # publishes is on disk.
        os.sync()
        corpus = root / TOP_FOLDER
        with writing(corpus):
            corpus.mkdir(exist_ok=True)
            for name in METADATA_FILES:  # the same in every subset's archive: the first one stays
                if (staging / name).is_file() and not (corpus / name).exists():
                    os.rename(staging / name, corpus / name)
            os.rename(staging / subset, corpus / subset)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return utterances


# ---------------------------------------------------------------------------- manifests


def _read_transcripts(path: Path, shown: str, how_to_fix: str) -> dict[str, str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = "missing" if isinstance(error, FileNotFoundError) else str(error)
        raise DataError(f"{shown}/{path.name}: cannot read the chapter's transcripts ({reason}); {how_to_fix}") from None
    transcripts = {}
    for line in filter(str.strip, lines):
        utterance, _, text = line.strip().partition(" ")
        transcripts[utterance] = text.strip()
    return transcripts


def _scan(folder: Path, how_to_fix: str, shown_as: str | None = None) -> list[_Utterance]:
    """Every utterance of a subset folder (``<speaker>/<chapter>/*.flac``), sorted by id.
    Messages name paths as ``shown_as/<speaker>/...`` (the archive's names for a staging folder)."""
    shown_as = shown_as or str(folder)
    utterances = []
    for chapter in sorted(path for path in folder.glob("*/*") if path.is_dir()):
        speaker = chapter.parent.name
        shown = f"{shown_as}/{speaker}/{chapter.name}"
        transcripts = _read_transcripts(chapter / f"{speaker}-{chapter.name}.trans.txt", shown, how_to_fix)
        audio = {path.stem: path for path in chapter.glob("*.flac")}
        unmatched = sorted(set(audio) ^ set(transcripts))
        if unmatched:
            raise DataError(
                f"{shown}: {', '.join(unmatched[:5])} {'has' if len(unmatched) == 1 else 'have'} audio without a "
                f"transcript line or a transcript line without audio; {how_to_fix}"
            )
        for utterance, path in audio.items():
            try:
                header = audio_header(path, how_to_fix)
            except DataError as error:  # its message names the (staging) path: name the file as shown
                reason = str(error).replace(str(path), path.name).removeprefix(path.name)
                raise DataError(f"{shown}/{path.name}{reason}") from None
            if header.frames == 0:
                raise DataError(f"{shown}/{path.name}: holds no audio samples; {how_to_fix}")
            relative = f"{speaker}/{chapter.name}/{path.name}"
            utterances.append(_Utterance(utterance, relative, header.frames / header.samplerate, transcripts[utterance], speaker))
    if not utterances:
        raise DataError(f"{shown_as}: no <speaker>/<chapter>/*.flac utterances; {how_to_fix}")
    return sorted(utterances, key=lambda utterance: utterance.id)


def _write(manifest: Path, subset_folder: Path, utterances: list[_Utterance]) -> None:
    write_manifest(manifest, [
        ManifestEntry(id=item.id, audio=subset_folder / item.relative, duration=item.duration, text=item.text,
                      speaker=item.speaker)
        for item in utterances
    ])
    logger.info("LibriSpeech: %d utterances (%.1f hours) in %s", len(utterances),
                sum(item.duration for item in utterances) / 3600, manifest)


def _prepare_subset(subset: str, root: Path, url: str, expected: str | None, keep_archive: bool) -> Path:
    subset_folder = root / TOP_FOLDER / subset
    manifest = root / "manifests" / f"{subset}.jsonl"
    if subset_folder.is_dir() and manifest.is_file():
        logger.info("LibriSpeech %s: already prepared in %s; reusing it", subset, subset_folder)
        return manifest
    if subset_folder.is_dir():
        fix = f"restore the file, or delete {subset_folder} and prepare again to download it afresh"
        _write(manifest, subset_folder, _scan(subset_folder, fix))
        return manifest
    archive = _ensure_archive(subset, root, url, expected)
    _write(manifest, subset_folder, _install(archive, subset, root))
    if not keep_archive:
        archive.unlink()
    return manifest


def prepare_librispeech(
    subsets: str | Iterable[str],
    root: str | Path,
    url: str = OPENSLR_URL,
    md5s: Mapping[str, str | None] | None = None,
    manifest_dir: str | Path | None = None,
    keep_archives: bool = False,
) -> dict[str, Path]:
    """Download, extract and index LibriSpeech subsets under ``root``; return ``{subset: manifest path}``.

    ``subsets`` are names of :data:`LIBRISPEECH_SUBSETS`; ``url`` and ``md5s`` are as in
    :func:`download_librispeech`. Manifests are written to ``root/manifests/<subset>.jsonl``
    and, when ``manifest_dir`` is given, copied there (paths made relative to it), so an
    experiment can hold the manifests it used. Archives are deleted once extracted unless
    ``keep_archives``. Prepared subsets are reused; see the module docstring for the layout.
    """
    chosen = _check_subsets(subsets)
    expected = {subset: _expected_md5(subset, md5s) for subset in chosen}
    root = Path(os.path.abspath(root))
    with _locked(root):
        written = {subset: _prepare_subset(subset, root, url, expected[subset], keep_archives) for subset in chosen}
        readme = root / "README.md"
        if not readme.is_file() or readme.read_text(encoding="utf-8") != _README:
            write_bytes_atomic(readme, _README.encode("utf-8"))
    if manifest_dir is None or Path(os.path.abspath(manifest_dir)) == root / "manifests":
        return written
    copies = {subset: Path(manifest_dir) / f"{subset}.jsonl" for subset in chosen}
    for subset, path in written.items():
        write_manifest(copies[subset], read_manifest(path))
    return copies


def librispeech_speakers(root: str | Path) -> dict[str, LibriSpeechSpeaker]:
    """``{speaker id: LibriSpeechSpeaker}`` from ``root/LibriSpeech/SPEAKERS.TXT`` (``;`` lines are comments)."""
    path = Path(root) / TOP_FOLDER / "SPEAKERS.TXT"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the speaker list ({error}); prepare a subset first") from None
    speakers = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [field.strip() for field in line.split("|", 4)]  # a name may hold "|" itself
        if len(fields) != 5 or not fields[0].isdigit():
            raise DataError(f"{path}:{number}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {line!r}")
        speakers[fields[0]] = LibriSpeechSpeaker(sex=fields[1], subset=fields[2], name=fields[4])
    return speakers
