"""Reading audio files into float waveforms, and naming what is wrong with a bad one.

Policy, in one place:

- Files are read with soundfile (WAV, FLAC, OGG, ... whatever libsndfile opens) as float32
  in [-1, 1] (float files may go a little beyond: headroom).
- Mono policy (``mono=``): ``"mix"`` averages the channels, ``"first"`` keeps channel 0,
  ``"error"`` rejects multi-channel files (reason ``multichannel``).
- A file whose sample rate differs from the requested one is resampled with soxr (high
  quality) when ``resample=True``; never silently: the first time each (file rate -> target
  rate) pair is met, one INFO message goes to the ``cadence`` logger (once per process, so
  each DataLoader worker may say it once). With ``resample=False`` it is bad audio
  (reason ``wrong_rate``).
- Before decoding, a WAV file's header is checked against the file (:func:`read_wav_data_chunk`:
  a few bytes per chunk, never the audio): libsndfile silently reads whatever part of a
  cut-short file is there, so without this a half-copied file would look like a short one.
- Samples must be finite (``non_finite``: NaN or infinite) and within
  :data:`OUT_OF_RANGE_PEAK` of full scale (``out_of_range``); in practice only float files
  break either, since integer PCM decodes into [-1, 1) by construction.
- Anything wrong with a file raises :class:`BadAudio`, a :class:`DataError` that names the
  file, carries a short machine-readable ``reason`` (one of :data:`BAD_AUDIO_REASONS`) and
  says how to fix it. Training loops skip and quarantine these; evaluation lets them raise;
  ``cadence data check`` lists them.

Example:

    >>> import tempfile, pathlib, numpy, soundfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
    >>> soundfile.write(path, numpy.full((800, 2), 0.5, dtype="float32"), 8000)
    >>> load_audio(path, sample_rate=8000).shape
    torch.Size([800])
    >>> load_audio(path, sample_rate=8000, min_duration=0.5)
    Traceback (most recent call last):
    ...
    cadence.data.audio.BadAudio: ...tone.wav: too_short: 0.1 s of audio, less than min_duration 0.5 s; ...
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
import threading
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import soundfile
import soxr
import torch

from cadence.errors import DataError

__all__ = [
    "BAD_AUDIO_REASONS",
    "OUT_OF_RANGE_PEAK",
    "BadAudio",
    "MonoPolicy",
    "WavDataChunk",
    "audio_header",
    "cannot_open",
    "check_audio_file",
    "load_audio",
    "read_wav_data_chunk",
]

logger = logging.getLogger("cadence")

MonoPolicy = Literal["mix", "first", "error"]

# Every way a file can be unusable, with what to do about it (the end of each message).
BAD_AUDIO_REASONS = {
    "not_found": "check the manifest's audio paths (relative ones resolve against the manifest's own folder, not the current directory), or drop the line from the manifest",
    "unreadable": "check that the file is a format libsndfile reads (WAV, FLAC, OGG), or drop it from the manifest",
    "empty": "the file holds no samples (a header only?); re-export it or drop it from the manifest",
    "truncated": "the file holds less audio than its header or its manifest duration says (an interrupted copy?); re-copy it, or drop it from the manifest",
    "non_finite": "the file holds NaN or infinite samples (a broken export or processing step?); re-export it, or drop it from the manifest",
    "out_of_range": "float samples should lie within [-1, 1] (integer PCM values stored as float? divide them by 32768 for 16-bit); rescale and re-export it, or drop it from the manifest",
    "silent": "every sample is exactly zero (a failed recording?); drop it from the manifest",
    "wrong_rate": "resample the corpus, or set the data option resample: true",
    "multichannel": "set the data option mono: mix (average channels) or mono: first",
    "too_short": "drop it from the manifest, or lower the data option min_duration",
}

# A file may hold a little less audio than its manifest says (durations rounded when written).
TRUNCATION_TOLERANCE_S = 0.01

# The largest peak a float file may have (full scale is 1.0). Float formats have headroom, and
# mixing, effects or resampling legitimately overshoot full scale by a few dB; +18 dBFS (8.0) is
# beyond any such headroom. The bug this catches is integer PCM values written as float without
# scaling: 16-bit values run to 32768, so even a quiet recording (peak -40 dBFS: 328) is far above.
OUT_OF_RANGE_PEAK = 8.0

# Data-chunk sizes a streaming writer puts in before it knows the length (and may never fix):
# no claim about the data, so never called truncation.
_PLACEHOLDER_SIZES = (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
# Real headers hold a handful of chunks; a crafted file could chain millions of tiny ones.
_MAX_HEADER_CHUNKS = 1000

_logged_rate_pairs: set[tuple[int, int]] = set()
_logged_rate_pairs_lock = threading.Lock()


class BadAudio(DataError):
    """An unusable audio file: ``path``, ``reason`` (a key of :data:`BAD_AUDIO_REASONS`), ``detail``."""

    def __init__(self, path: str | Path, reason: str, detail: str) -> None:
        if reason not in BAD_AUDIO_REASONS:
            raise ValueError(f"unknown bad-audio reason {reason!r}")
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}: {detail}; {BAD_AUDIO_REASONS[reason]}")

    def __reduce__(self):
        # DataLoader workers send exceptions to the main process by pickling them.
        return (BadAudio, (self.path, self.reason, self.detail))


def _maybe_log_resampling(file_rate: int, target_rate: int, path: Path) -> None:
    with _logged_rate_pairs_lock:
        if (file_rate, target_rate) in _logged_rate_pairs:
            return
        _logged_rate_pairs.add((file_rate, target_rate))
    logger.info(
        "resampling audio from %d Hz to %d Hz with soxr (first file: %s); "
        "other %d Hz files are resampled without another message",
        file_rate, target_rate, path, file_rate,
    )


def cannot_open(path: Path, error: Exception) -> BadAudio:
    """``not_found`` when nothing is at ``path``, ``unreadable`` (with the error) otherwise."""
    if not os.path.exists(path):
        return BadAudio(path, "not_found", "no such file")
    return BadAudio(path, "unreadable", f"cannot read audio ({error})")


@dataclasses.dataclass(frozen=True)
class WavDataChunk:
    """What a WAV header declares of its audio data, against what the file holds.

    ``declared``: bytes of audio data the header declares; ``present``: bytes the file holds
    from the data chunk's start to its end; ``byte_rate``: bytes per second (from the ``fmt``
    chunk; 0 when unknown).
    """

    declared: int
    present: int
    byte_rate: int

    @property
    def is_cut_short(self) -> bool:
        # As for manifest durations (TRUNCATION_TOLERANCE_S), a few missing milliseconds are not
        # damage: some writers round the declared size up; without a known rate, one byte is.
        tolerance = round(self.byte_rate * TRUNCATION_TOLERANCE_S) if self.byte_rate else 1
        return self.declared - self.present > tolerance

    def describe(self) -> str:
        """``its header declares 7556 bytes of audio data (0.472 s), the file holds 2518 (0.157 s)``."""
        seconds = lambda size: f" ({size / self.byte_rate:.3f} s)" if self.byte_rate else ""
        return (
            f"its header declares {self.declared} bytes of audio data{seconds(self.declared)}, "
            f"the file holds {self.present}{seconds(self.present)}"
        )


def _is_chunk_id(name: bytes) -> bool:
    return len(name) == 4 and all(32 <= byte < 127 for byte in name)


def _next_chunk_start(file, end: int, size: int) -> int:
    """Where the chunk after one ending at ``end`` starts. A chunk of odd size is followed by a
    zero pad byte, which some writers forget: a chunk id (four printable characters, never
    starting with a zero byte) found where the pad byte should be starts the next chunk."""
    if size % 2 == 0:
        return end
    file.seek(end)
    name = file.read(4)
    return end if name[:1] != b"\0" and _is_chunk_id(name) else end + 1


def read_wav_data_chunk(path: str | Path | BinaryIO) -> WavDataChunk | None:
    """The ``data`` chunk of a WAV file (RIFF, RIFX, RF64 or BW64), read from the header alone.

    None for other formats (FLAC, OGG, ...), a header without a data chunk, or a size that is
    a streaming writer's placeholder (0 or all ones). Reads a few bytes per chunk, never the
    audio; raises ``OSError`` when the file cannot be opened. ``path`` may be a file already
    open for reading in binary mode.

    >>> import tempfile, pathlib, numpy, soundfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
    >>> soundfile.write(path, numpy.full(800, 0.5, dtype="float32"), 8000, subtype="PCM_16")
    >>> read_wav_data_chunk(path)
    WavDataChunk(declared=1600, present=1600, byte_rate=16000)
    >>> _ = path.write_bytes(path.read_bytes()[:1000])
    >>> read_wav_data_chunk(path).describe()
    'its header declares 1600 bytes of audio data (0.100 s), the file holds 956 (0.060 s)'
    """
    if not isinstance(path, (str, os.PathLike)):
        return _data_chunk(path)
    with open(path, "rb") as file:
        return _data_chunk(file)


def _data_chunk(file: BinaryIO) -> WavDataChunk | None:
    file.seek(0)
    file_size = os.fstat(file.fileno()).st_size
    riff = file.read(12)
    if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RIFX", b"RF64", b"BW64") or riff[8:] != b"WAVE":
        return None
    order = ">" if riff[:4] == b"RIFX" else "<"
    data_size_64 = None  # RF64/BW64: the 'ds64' chunk holds the sizes over 4 GiB
    byte_rate = 0
    position = 12
    for _ in range(_MAX_HEADER_CHUNKS):
        file.seek(position)
        header = file.read(8)
        if len(header) < 8:
            return None
        name, size = header[:4], struct.unpack(order + "I", header[4:])[0]
        if name == b"data":
            declared = data_size_64 if size == 0xFFFFFFFF and data_size_64 is not None else size
            if declared in _PLACEHOLDER_SIZES:
                return None
            return WavDataChunk(declared, file_size - (position + 8), byte_rate)
        body = file.read(min(size, 16))
        if name == b"ds64" and len(body) >= 16:
            data_size_64 = struct.unpack("<Q", body[8:16])[0]  # after the RIFF size
        elif name == b"fmt " and len(body) >= 12:
            byte_rate = struct.unpack(order + "I", body[8:12])[0]
        position = _next_chunk_start(file, position + 8 + size, size)
    return None


def check_audio_file(path: str | Path) -> None:
    """Raise :class:`BadAudio` when ``path`` is missing (``not_found``), cannot be opened
    (``unreadable``), or is a WAV file holding less audio data than its header declares
    (``truncated``; ``empty`` when it holds none). Reads the header only."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            _check_header(path, file)
    except FileNotFoundError:
        raise BadAudio(path, "not_found", "no such file") from None
    except OSError as error:
        raise cannot_open(path, error) from None


def _check_header(path: Path, file: BinaryIO) -> None:
    """:func:`check_audio_file` on the file already open."""
    chunk = read_wav_data_chunk(file)
    if chunk is None or not chunk.is_cut_short:
        return
    if chunk.present <= 0:
        raise BadAudio(path, "empty", f"no audio samples: {chunk.describe()}")
    raise BadAudio(path, "truncated", f"the file is cut short: {chunk.describe()}")


def audio_header(path: str | Path, how_to_fix: str) -> soundfile._SoundFileInfo:
    """The file's header (frames, rate, channels) without decoding; a DataError naming it otherwise."""
    try:
        return soundfile.info(path)
    except (RuntimeError, OSError) as error:
        raise DataError(f"{path}: cannot read the audio header ({error}); {how_to_fix}") from None


def _read(path: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    """Samples ``[frames, channels]`` float32 of the segment, and the file's rate, after the
    checks of :func:`check_audio_file`: the file is opened once for both."""
    try:
        with open(path, "rb") as file, soundfile.SoundFile(_header_checked(path, file), closefd=False) as audio_file:
            file_rate = audio_file.samplerate
            start = round(offset * file_rate)
            frames = -1 if duration is None else round(duration * file_rate)
            if start > 0:
                audio_file.seek(min(start, audio_file.frames))
            return audio_file.read(frames, dtype="float32", always_2d=True), file_rate
    except FileNotFoundError:
        raise BadAudio(path, "not_found", "no such file") from None
    except (RuntimeError, OSError, ValueError) as error:
        # soundfile raises LibsndfileError (a RuntimeError) for malformed files.
        raise cannot_open(path, error) from None


def _header_checked(path: Path, file: BinaryIO) -> int:
    """The file's descriptor, rewound for libsndfile, once its header passed :func:`_check_header`."""
    _check_header(path, file)
    os.lseek(file.fileno(), 0, os.SEEK_SET)
    return file.fileno()


def _check_sample_values(path: Path, samples: np.ndarray, where: str) -> None:
    """``non_finite`` for NaN or infinite samples, ``out_of_range`` for a peak over :data:`OUT_OF_RANGE_PEAK`."""
    # max and min propagate NaN, and neither copies the samples (as abs() would).
    peak = max(float(samples.max()), -float(samples.min()))
    if peak <= OUT_OF_RANGE_PEAK:
        return
    non_finite = samples.size - int(np.isfinite(samples).sum())
    if non_finite:
        nan = int(np.isnan(samples).sum())
        raise BadAudio(
            path, "non_finite",
            f"{non_finite} of {samples.size} samples{where} are not finite ({nan} NaN, {non_finite - nan} infinite)",
        )
    raise BadAudio(
        path, "out_of_range",
        f"peak {peak:.6g}{where}, over the limit of {OUT_OF_RANGE_PEAK:g} (full scale is 1.0)",
    )


def load_audio(
    path: str | Path,
    sample_rate: int,
    offset: float = 0.0,
    duration: float | None = None,
    *,
    resample: bool = True,
    mono: MonoPolicy = "mix",
    min_duration: float = 0.0,
    check_content: bool = True,
) -> torch.Tensor:
    """Read ``path`` as a mono float32 waveform ``[samples]`` at ``sample_rate``.

    ``offset`` and ``duration`` (seconds, in the file's own time line) select a segment;
    ``duration=None`` reads to the end. A segment that ends more than 10 ms early is
    ``truncated``, as is a WAV file holding less data than its header declares;
    ``min_duration`` (seconds) rejects shorter audio as ``too_short``. NaN or infinite
    samples are ``non_finite``, a peak over :data:`OUT_OF_RANGE_PEAK` is ``out_of_range``;
    a missing file is ``not_found``.
    ``check_content=False`` skips the checks that judge a whole utterance (``silent`` and
    ``too_short``): a chunk of a good recording may be a pause, or the short end of it.
    Raises :class:`BadAudio` for every unusable file.
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if offset < 0 or (duration is not None and duration < 0):
        raise ValueError(f"offset and duration must be >= 0, got offset={offset!r} duration={duration!r}")
    if mono not in ("mix", "first", "error"):
        raise ValueError(f"mono must be 'mix', 'first' or 'error', got {mono!r}")
    path = Path(path)
    samples, file_rate = _read(path, offset, duration)
    where = f" at offset {offset} s" if offset else ""
    if samples.shape[0] == 0:
        raise BadAudio(path, "empty", f"no audio samples{where}")
    if duration is not None and samples.shape[0] < round((duration - TRUNCATION_TOLERANCE_S) * file_rate):
        raise BadAudio(
            path, "truncated",
            f"shorter than its manifest entry: {samples.shape[0] / file_rate:.3f} s of audio{where} "
            f"where {duration:.3f} s were expected",
        )
    _check_sample_values(path, samples, where)
    if check_content and not samples.any():
        raise BadAudio(path, "silent", f"all {samples.shape[0]} samples{where} are zero")
    if samples.shape[1] > 1 and mono == "error":
        raise BadAudio(path, "multichannel", f"{samples.shape[1]} channels, and the mono policy is 'error'")
    if file_rate != sample_rate and not resample:
        raise BadAudio(path, "wrong_rate", f"{file_rate} Hz audio where {sample_rate} Hz is configured")
    if check_content and samples.shape[0] < min_duration * file_rate:
        raise BadAudio(
            path, "too_short", f"{samples.shape[0] / file_rate:.3g} s of audio, less than min_duration {min_duration:g} s"
        )
    # Mono files pass through without a copy.
    if samples.shape[1] == 1 or mono == "first":
        waveform = samples[:, 0]
    else:
        waveform = samples.mean(axis=1, dtype=np.float32)
    if file_rate != sample_rate:
        _maybe_log_resampling(file_rate, sample_rate, path)
        waveform = soxr.resample(waveform, file_rate, sample_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
