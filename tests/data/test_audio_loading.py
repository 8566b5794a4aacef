from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from cadence.data import audio as audio_module
from cadence.data.audio import BadAudio, WavDataChunk, load_audio, read_wav_data_chunk
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
    with pytest.raises(DataError, match=r"absent\.wav: not_found: no such file; check the manifest's audio paths"):
        load_audio(tmp_path / "absent.wav", 8000)
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(DataError, match=r"empty\.wav: empty: no audio samples"):
        load_audio(tmp_path / "empty.wav", 8000)
    soundfile.write(tmp_path / "short.wav", np.zeros(80, dtype=np.float32), 8000)
    with pytest.raises(DataError, match=r"short\.wav: empty: no audio samples at offset 1\.0 s"):
        load_audio(tmp_path / "short.wav", 8000, offset=1.0)


# ---------------------------------------------------------------------------- WAV headers

FMT_PCM16_8K = (1, 1, 8000, 16000, 2, 16)  # PCM, mono, 8 kHz, 16000 bytes/s, block 2, 16 bits


def chunk(name: bytes, body: bytes, *, declared: int | None = None, pad: bool = True, order: str = "<") -> bytes:
    """One RIFF chunk; ``declared`` overrides the size field, ``pad=False`` leaves out the pad byte of an odd body."""
    size = len(body) if declared is None else declared
    return name + struct.pack(order + "I", size) + body + (b"\0" if pad and len(body) % 2 else b"")


def wave(*chunks: bytes, form: bytes = b"RIFF", order: str = "<") -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return form + struct.pack(order + "I", 0xFFFFFFFF if form == b"RF64" else len(body)) + body


def fmt(order: str = "<") -> bytes:
    return chunk(b"fmt ", struct.pack(order + "HHIIHH", *FMT_PCM16_8K), order=order)


def tone_bytes(samples: int) -> bytes:
    return (np.sin(np.arange(samples) / 3) * 10000).astype("<i2").tobytes()


def test_the_data_chunk_of_a_canonical_wav(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    soundfile.write(path, np.full(800, 0.5, dtype=np.float32), 8000, subtype="PCM_16")
    assert read_wav_data_chunk(path) == WavDataChunk(declared=1600, present=1600, byte_rate=16000)
    path.write_bytes(path.read_bytes()[:1000])
    chunk_found = read_wav_data_chunk(path)
    assert chunk_found.is_cut_short and (chunk_found.declared, chunk_found.present) == (1600, 956)


@pytest.mark.parametrize("pad", [True, False], ids=["padded", "pad_byte_forgotten"])
def test_odd_sized_chunks_before_the_data_are_stepped_over(tmp_path: Path, pad: bool) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(wave(fmt(), chunk(b"LIST", b"INFOISFT\x05\0\0\0cdnc\0", pad=pad), chunk(b"data", tone_bytes(400))))
    assert read_wav_data_chunk(path) == WavDataChunk(declared=800, present=800, byte_rate=16000)
    if pad:  # libsndfile itself cannot find the data of the other (unreadable, not truncated)
        assert load_audio(path, 8000).shape == (400,)


def test_chunks_after_the_data_count_as_present_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(wave(fmt(), chunk(b"data", tone_bytes(400)), chunk(b"LIST", b"INFO")))
    assert not read_wav_data_chunk(path).is_cut_short
    assert load_audio(path, 8000).shape == (400,)


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF])
def test_a_streaming_writers_placeholder_size_is_not_truncation(tmp_path: Path, placeholder: int) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(wave(fmt(), chunk(b"data", tone_bytes(400), declared=placeholder)))
    assert read_wav_data_chunk(path) is None


def test_rf64_sizes_come_from_the_ds64_chunk(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    soundfile.write(path, np.full(800, 0.5, dtype=np.float32), 8000, format="RF64", subtype="FLOAT")
    assert read_wav_data_chunk(path) == WavDataChunk(declared=3200, present=3200, byte_rate=32000)
    assert load_audio(path, 8000).shape == (800,)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(BadAudio, match=r"a\.wav: truncated: the file is cut short: its header declares 3200 bytes .* holds 2200") as caught:
        load_audio(path, 8000)
    assert caught.value.reason == "truncated"


def test_big_endian_rifx_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    data = (np.arange(400) * 50).astype(">i2").tobytes()
    path.write_bytes(wave(fmt(">"), chunk(b"data", data, declared=2000, order=">"), form=b"RIFX", order=">"))
    assert read_wav_data_chunk(path) == WavDataChunk(declared=2000, present=800, byte_rate=16000)


def test_other_formats_and_headers_without_data_are_not_judged(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "a.flac", np.full(800, 0.5, dtype=np.float32), 8000)
    (tmp_path / "b.wav").write_bytes(wave(fmt()))
    (tmp_path / "c.wav").write_bytes(b"RIFF")
    assert [read_wav_data_chunk(tmp_path / name) for name in ("a.flac", "b.wav", "c.wav")] == [None, None, None]
    with pytest.raises(FileNotFoundError):
        read_wav_data_chunk(tmp_path / "absent.wav")
