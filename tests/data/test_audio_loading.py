from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from cadence.data import audio as audio_module
from cadence.data.audio import load_audio
from cadence.errors import DataError


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def cadence_log():
    """Messages sent to the 'cadence' logger, whatever handlers the rest of the project installs."""
    handler = _Records()
    logger = logging.getLogger("cadence")
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(previous_level)


def test_reads_a_real_fsdd_file_as_float32_mono(fsdd_files: list[Path]) -> None:
    path = fsdd_files[0]
    waveform = load_audio(path, sample_rate=8000)
    expected, _ = soundfile.read(path, dtype="float32")
    assert waveform.dtype == torch.float32 and waveform.dim() == 1
    assert waveform.shape[0] == soundfile.info(path).frames
    assert torch.equal(waveform, torch.from_numpy(expected))


def test_offset_and_duration_select_a_segment(fsdd_files: list[Path]) -> None:
    path = fsdd_files[1]
    whole = load_audio(path, sample_rate=8000)
    segment = load_audio(path, sample_rate=8000, offset=0.01, duration=0.05)
    assert torch.equal(segment, whole[80:480])
    assert torch.equal(load_audio(path, 8000, offset=0.01), whole[80:])


def test_channels_are_averaged(tmp_path: Path) -> None:
    stereo = np.stack([np.full(100, 0.5), np.full(100, -0.25)], axis=1).astype(np.float32)
    soundfile.write(tmp_path / "stereo.wav", stereo, 8000, subtype="FLOAT")
    assert torch.allclose(load_audio(tmp_path / "stereo.wav", 8000), torch.full((100,), 0.125))


def test_other_rates_are_resampled_with_one_log_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cadence_log: list[str]
) -> None:
    monkeypatch.setattr(audio_module, "_logged_rate_pairs", set())
    time = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * time)).astype(np.float32)
    for name in ("a.wav", "b.wav"):
        soundfile.write(tmp_path / name, tone, 16000, subtype="FLOAT")

    first = load_audio(tmp_path / "a.wav", sample_rate=8000)
    second = load_audio(tmp_path / "b.wav", sample_rate=8000)

    assert first.shape == (8000,) and first.dtype == torch.float32 and torch.equal(first, second)
    spectrum = np.abs(np.fft.rfft(first.numpy()))
    assert np.argmax(spectrum) == 440  # 1 s at 8 kHz: bin k is k Hz
    resample_messages = [message for message in cadence_log if "resampling" in message]
    assert len(resample_messages) == 1
    assert "16000 Hz to 8000 Hz" in resample_messages[0] and "a.wav" in resample_messages[0]

    load_audio(tmp_path / "a.wav", sample_rate=16000)  # same rate: no resampling, no message
    assert len([message for message in cadence_log if "resampling" in message]) == 1


def test_unreadable_missing_and_empty_files_are_data_errors(tmp_path: Path) -> None:
    (tmp_path / "text.wav").write_text("this is not audio")
    with pytest.raises(DataError, match=r"text\.wav: unreadable: cannot read audio"):
        load_audio(tmp_path / "text.wav", 8000)
    with pytest.raises(DataError, match=r"absent\.wav: unreadable: cannot read audio"):
        load_audio(tmp_path / "absent.wav", 8000)
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(DataError, match=r"empty\.wav: empty: no audio samples"):
        load_audio(tmp_path / "empty.wav", 8000)
    soundfile.write(tmp_path / "short.wav", np.zeros(80, dtype=np.float32), 8000)
    with pytest.raises(DataError, match=r"short\.wav: empty: no audio samples at offset 1\.0 s"):
        load_audio(tmp_path / "short.wav", 8000, offset=1.0)
