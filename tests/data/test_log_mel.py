from __future__ import annotations

import inspect
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from cadence.data.audio import load_audio
from cadence.data.features import LogMel, mel_filterbank


def librosa_log_mel(waveform: np.ndarray) -> np.ndarray:
    """The reference definition LogMel must match: [n_mels, frames]."""
    mel = librosa.feature.melspectrogram(
        y=waveform,
        sr=8000,
        n_fft=256,
        hop_length=80,
        win_length=200,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=40,
        fmin=0.0,
        fmax=4000.0,
        htk=False,
        norm="slaney",
    )
    return np.log(mel + 1e-6)


def test_filterbank_equals_librosa_slaney() -> None:
    reference = librosa.filters.mel(sr=8000, n_fft=256, n_mels=40, fmin=0.0, fmax=4000.0, htk=False, norm="slaney")
    ours = mel_filterbank(8000, 256, 40, 0.0, 4000.0)
    assert ours.shape == (40, 129)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-7)
    # Another configuration, with the band crossing the 1 kHz linear/log break differently.
    reference = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, fmin=20.0, fmax=7600.0, htk=False, norm="slaney")
    np.testing.assert_allclose(mel_filterbank(16000, 512, 80, 20.0, 7600.0), reference, rtol=0, atol=1e-7)


def test_matches_librosa_on_real_fsdd_files(fsdd_files: list[Path]) -> None:
    log_mel = LogMel()
    for path in fsdd_files[:4]:
        waveform = load_audio(path, sample_rate=8000)
        features, frame_lengths = log_mel(waveform[None, :], torch.tensor([waveform.shape[0]]))
        reference = librosa_log_mel(waveform.numpy())
        assert features.shape == (1, 40, reference.shape[1])
        assert frame_lengths.tolist() == [1 + waveform.shape[0] // 80] == [reference.shape[1]]
        assert np.abs(features[0].numpy() - reference).max() < 1e-4, path.name


def test_padded_batch_gives_each_utterance_its_own_frames(fsdd_files: list[Path]) -> None:
    log_mel = LogMel()
    waveforms = [load_audio(path, sample_rate=8000) for path in fsdd_files[:3]]
    lengths = torch.tensor([waveform.shape[0] for waveform in waveforms])
    assert len(set(lengths.tolist())) == 3, "the test needs utterances of different lengths"
    # Padding with noise, not zeros: samples beyond a length must not reach any valid frame.
    batch = torch.randn(3, int(lengths.max()), generator=torch.Generator().manual_seed(0))
    for row, waveform in enumerate(waveforms):
        batch[row, : waveform.shape[0]] = waveform

    features, frame_lengths = log_mel(batch, lengths)

    assert frame_lengths.dtype == torch.int64
    assert frame_lengths.tolist() == (1 + lengths // 80).tolist()
    for row, waveform in enumerate(waveforms):
        alone, _ = log_mel(waveform[None, :], lengths[row : row + 1])
        valid = int(frame_lengths[row])
        torch.testing.assert_close(features[row, :, :valid], alone[0], rtol=0, atol=1e-5)
        assert torch.all(features[row, :, valid:] == 0)


def test_derived_constants_are_not_checkpointed() -> None:
    log_mel = LogMel()
    assert log_mel.state_dict() == {}
    assert {name for name, _ in log_mel.named_buffers()} == {"window", "filterbank"}
    assert log_mel.to(torch.float64).filterbank.dtype == torch.float64  # buffers still follow .to()


def test_constructor_is_a_config_schema() -> None:
    parameters = inspect.signature(LogMel.__init__).parameters
    assert all(parameter.kind is not inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())
    for name, parameter in list(parameters.items())[1:]:
        assert parameter.default is not inspect.Parameter.empty, name
        assert parameter.annotation is not inspect.Parameter.empty, name
    assert [parameter.default for parameter in parameters.values()][1:5] == [8000, 256, 200, 80]


@pytest.mark.parametrize(
    "arguments",
    [{"win_length": 300}, {"hop_length": 0}, {"f_max": 5000.0}, {"f_min": 4000.0}, {"log_offset": 0.0}],
)
def test_rejects_impossible_settings(arguments: dict) -> None:
    with pytest.raises(ValueError):
        LogMel(**arguments)
