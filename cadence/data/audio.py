"""Reading audio files into float waveforms.

Policy, in one place:

- Files are read with soundfile (WAV, FLAC, OGG, ... whatever libsndfile opens) as float32
  in [-1, 1].
- Multi-channel audio is mixed down to mono by averaging the channels.
- A file whose sample rate differs from the requested one is resampled with soxr
  (high quality). Never silently: the first time each (file rate -> target rate) pair is
  met, one INFO message goes to the ``cadence`` logger (once per process, so each
  DataLoader worker may say it once).
- A file that cannot be read, or that yields no samples, raises :class:`DataError`
  naming it.

Example:

    >>> import tempfile, pathlib, numpy, soundfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
    >>> soundfile.write(path, numpy.zeros((800, 2), dtype="float32"), 8000)
    >>> load_audio(path, sample_rate=8000).shape
    torch.Size([800])
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

from cadence.errors import DataError

__all__ = ["load_audio"]

logger = logging.getLogger("cadence")

_logged_rate_pairs: set[tuple[int, int]] = set()
_logged_rate_pairs_lock = threading.Lock()


def _maybe_log_resampling(file_rate: int, target_rate: int, path: Path) -> None:
    with _logged_rate_pairs_lock:
        if (file_rate, target_rate) in _logged_rate_pairs:
            return
        _logged_rate_pairs.add((file_rate, target_rate))
    logger.info(
        "resampling audio from %d Hz to %d Hz with soxr (first file: %s); "
        "other %d Hz files are resampled without another message",
        file_rate,
        target_rate,
        path,
        file_rate,
    )


def load_audio(
    path: str | Path,
    sample_rate: int,
    offset: float = 0.0,
    duration: float | None = None,
) -> torch.Tensor:
    """Read ``path`` as a mono float32 waveform ``[samples]`` at ``sample_rate``.

    ``offset`` and ``duration`` (seconds, in the file's own time line) select a segment;
    ``duration=None`` reads to the end. A segment that runs past the end of the file is
    cut short at the end rather than padded.
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if offset < 0 or (duration is not None and duration < 0):
        raise ValueError(f"offset and duration must be >= 0, got offset={offset!r} duration={duration!r}")
    path = Path(path)
    try:
        with soundfile.SoundFile(path) as audio_file:
            file_rate = audio_file.samplerate
            start = round(offset * file_rate)
            frames = -1 if duration is None else round(duration * file_rate)
            if start > 0:
                audio_file.seek(min(start, audio_file.frames))
            samples = audio_file.read(frames, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as error:
        # soundfile raises LibsndfileError (a RuntimeError) for missing and malformed files.
        raise DataError(
            f"{path}: cannot read audio ({error}); check that the file exists and is a format "
            "libsndfile reads (WAV, FLAC, OGG), or drop it from the manifest"
        ) from None
    if samples.shape[0] == 0:
        where = f" at offset {offset} s" if offset else ""
        raise DataError(
            f"{path}: no audio samples{where}; remove the file from the manifest or fix its offset/duration"
        )
    # Mono policy: average the channels (mono files pass through without a copy).
    waveform = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)
    if file_rate != sample_rate:
        _maybe_log_resampling(file_rate, sample_rate, path)
        waveform = soxr.resample(waveform, file_rate, sample_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
