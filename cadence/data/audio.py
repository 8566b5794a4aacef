"""Reading audio files into float waveforms, and naming what is wrong with a bad one.

Policy, in one place:

- Files are read with soundfile (WAV, FLAC, OGG, ... whatever libsndfile opens) as float32
  in [-1, 1].
- Mono policy (``mono=``): ``"mix"`` averages the channels, ``"first"`` keeps channel 0,
  ``"error"`` rejects multi-channel files (reason ``multichannel``).
- A file whose sample rate differs from the requested one is resampled with soxr (high
  quality) when ``resample=True``; never silently: the first time each (file rate -> target
  rate) pair is met, one INFO message goes to the ``cadence`` logger (once per process, so
  each DataLoader worker may say it once). With ``resample=False`` it is bad audio
  (reason ``wrong_rate``).
- Anything wrong with a file raises :class:`BadAudio`, a :class:`DataError` that names the
  file, carries a short machine-readable ``reason`` (one of :data:`BAD_AUDIO_REASONS`) and
  says how to fix it. Training loops skip and quarantine these; evaluation lets them raise.

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

import logging
import threading
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile
import soxr
import torch

from cadence.errors import DataError

__all__ = ["BAD_AUDIO_REASONS", "BadAudio", "MonoPolicy", "audio_header", "load_audio"]

logger = logging.getLogger("cadence")

MonoPolicy = Literal["mix", "first", "error"]

# Every way a file can be unusable, with what to do about it (the end of each message).
BAD_AUDIO_REASONS = {
    "unreadable": "check that the file exists and is a format libsndfile reads (WAV, FLAC, OGG), or drop it from the manifest",
    "empty": "the file holds no samples (a header only?); re-export it or drop it from the manifest",
    "truncated": "the file is shorter than its manifest duration (an interrupted copy?); re-copy it, or rebuild the manifest with `cadence data manifest`",
    "silent": "every sample is exactly zero (a failed recording?); drop it from the manifest",
    "wrong_rate": "resample the corpus, or set the data option resample: true",
    "multichannel": "set the data option mono: mix (average channels) or mono: first",
    "too_short": "drop it from the manifest, or lower the data option min_duration",
}

# A file may hold a little less audio than its manifest says (durations rounded when written).
TRUNCATION_TOLERANCE_S = 0.01

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


def audio_header(path: str | Path, how_to_fix: str) -> soundfile._SoundFileInfo:
    """The file's header (frames, rate, channels) without decoding; a DataError naming it otherwise."""
    try:
        return soundfile.info(path)
    except (RuntimeError, OSError) as error:
        raise DataError(f"{path}: cannot read the audio header ({error}); {how_to_fix}") from None


def _read(path: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    """Samples ``[frames, channels]`` float32 of the segment, and the file's rate."""
    try:
        with soundfile.SoundFile(path) as audio_file:
            file_rate = audio_file.samplerate
            start = round(offset * file_rate)
            frames = -1 if duration is None else round(duration * file_rate)
            if start > 0:
                audio_file.seek(min(start, audio_file.frames))
            return audio_file.read(frames, dtype="float32", always_2d=True), file_rate
    except (RuntimeError, OSError, ValueError) as error:
        # soundfile raises LibsndfileError (a RuntimeError) for missing and malformed files.
        raise BadAudio(path, "unreadable", f"cannot read audio ({error})") from None


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
    ``truncated``; ``min_duration`` (seconds) rejects shorter audio as ``too_short``.
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
            path, "truncated", f"{samples.shape[0] / file_rate:.3f} s of audio{where} where {duration:.3f} s were expected"
        )
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
