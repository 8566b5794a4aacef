"""Shared fixtures: tiny synthetic data, the FSDD location, damaged audio files, a quiet logger."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader, TensorDataset

from cadence.data.manifest import ManifestEntry, write_manifest

REPOSITORY = Path(__file__).resolve().parents[1]
FSDD_ROOT = REPOSITORY.parent / "shared" / "data" / "fsdd"


@pytest.fixture(scope="session")
def fsdd_root() -> Path:
    """The real FSDD corpus beside the checkout (or $CADENCE_FSDD_ROOT); skipped where absent."""
    root = Path(os.environ.get("CADENCE_FSDD_ROOT") or FSDD_ROOT)
    if not (root / "recordings" / "0_george_0.wav").is_file():
        pytest.skip(f"FSDD not found at {root}; set CADENCE_FSDD_ROOT")
    return root


def separable_data(samples: int = 96, features: int = 6, classes: int = 3, seed: int = 0) -> TensorDataset:
    """Gaussian blobs a linear model separates, so a few epochs learn them."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=generator) * 3  # first: the same for any size
    targets = torch.randint(0, classes, (samples,), generator=generator)
    inputs = centers[targets] + torch.randn(samples, features, generator=generator) * 0.5
    return TensorDataset(inputs, targets)


@pytest.fixture
def loaders():
    train = DataLoader(separable_data(seed=0), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    valid = DataLoader(separable_data(samples=48, seed=0), batch_size=24)  # same centers, other points
    return train, valid


@pytest.fixture(autouse=True)
def _reset_cadence_logger():
    yield
    logger = logging.getLogger("cadence")
    # Every test starts without handlers: a console handler made in an earlier test would
    # still write to that test's (captured) stderr.
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


# ---------------------------------------------------------------------------- bad audio

# Every case as (seconds the ORIGINAL file holds, what the file on disk is). The manifest
# written by `write_bad_audio_manifest` gives these durations, as a manifest built before
# the damage would.
BAD_AUDIO_CASES = {
    "good": (0.5, "0.5 s of a 440 Hz tone, 8 kHz mono 16-bit"),
    "zero_bytes": (0.5, "an empty file"),
    "header_only": (0.5, "the 44-byte WAV header of a good file, no samples"),
    "truncated": (0.5, "a good file cut in half (its header still says 0.5 s)"),
    "wrong_rate": (0.5, "the tone at 16 kHz (8 kHz is expected)"),
    "stereo": (0.5, "two channels: the tone and its half"),
    "all_zeros": (0.5, "0.5 s of digital silence"),
    "too_short": (0.01, "10 ms of the tone"),
}
BAD_AUDIO_SAMPLE_RATE = 8000


def _tone(seconds: float, sample_rate: int) -> np.ndarray:
    time = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 440 * time)).astype(np.float32)


@pytest.fixture
def bad_audio_files(tmp_path: Path) -> dict[str, Path]:
    """``{case: path}`` for each case of :data:`BAD_AUDIO_CASES`, written into ``tmp_path/bad_audio``.

    Through ``load_audio(path, 8000, duration=<manifest duration>, resample=False, mono="error",
    min_duration=0.05)`` each case gives the BadAudio reason its name suggests: zero_bytes ->
    unreadable, header_only -> empty, truncated, wrong_rate, stereo -> multichannel,
    all_zeros -> silent, too_short; good loads.
    """
    folder = tmp_path / "bad_audio"
    folder.mkdir()
    rate = BAD_AUDIO_SAMPLE_RATE
    files = {case: folder / f"{case}.wav" for case in BAD_AUDIO_CASES}
    tone = _tone(0.5, rate)
    soundfile.write(files["good"], tone, rate, subtype="PCM_16")
    good_bytes = files["good"].read_bytes()
    files["zero_bytes"].write_bytes(b"")
    files["header_only"].write_bytes(good_bytes[:44])  # a canonical WAV header is 44 bytes
    files["truncated"].write_bytes(good_bytes[: len(good_bytes) // 2])
    soundfile.write(files["wrong_rate"], _tone(0.5, 2 * rate), 2 * rate, subtype="PCM_16")
    soundfile.write(files["stereo"], np.stack([tone, tone / 2], axis=1), rate, subtype="PCM_16")
    soundfile.write(files["all_zeros"], np.zeros_like(tone), rate, subtype="PCM_16")
    soundfile.write(files["too_short"], _tone(0.01, rate), rate, subtype="PCM_16")
    return files


@pytest.fixture
def write_bad_audio_manifest(bad_audio_files: dict[str, Path]):
    """A function ``(path, cases=None) -> path`` writing a manifest of ``bad_audio_files``
    (all cases, or the given ones), with the durations the original files held; ids are the case names."""

    def write(path: Path, cases: Iterable[str] | None = None) -> Path:
        chosen = list(BAD_AUDIO_CASES) if cases is None else list(cases)
        entries = [
            ManifestEntry(id=case, audio=bad_audio_files[case], duration=BAD_AUDIO_CASES[case][0]) for case in chosen
        ]
        write_manifest(path, entries)
        return Path(path)

    return write


@pytest.fixture
def bad_audio_cases() -> dict[str, tuple[float, str]]:
    """:data:`BAD_AUDIO_CASES`: ``{case: (seconds the original file held, description)}``."""
    return BAD_AUDIO_CASES
