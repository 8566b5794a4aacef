"""Spectrogram and MFCC against librosa on real FSDD recordings; padding rules for all three features.

LogMel's own librosa parity lives in test_log_mel.py.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from cadence.data.audio import load_audio
from cadence.data.features import MFCC, LogMel, Spectrogram
from cadence.errors import ConfigError

FRAMING = {"n_fft": 256, "hop_length": 80, "win_length": 200, "window": "hann", "center": True, "pad_mode": "constant"}


def librosa_mfcc(waveform: np.ndarray, n_mels: int = 40, n_mfcc: int = 13, fmin: float = 0.0, fmax: float = 4000.0):
    """The reference definition MFCC must match: [n_mfcc, frames]."""
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=8000, power=2.0, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm="slaney", **FRAMING
    )
    return librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=n_mfcc, dct_type=2, norm="ortho")


def run_alone(module: torch.nn.Module, waveform: torch.Tensor) -> torch.Tensor:
    features, _ = module(waveform[None, :], torch.tensor([waveform.shape[0]]))
    return features[0]


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_spectrogram_matches_librosa_stft(fsdd_files: list[Path], power: float) -> None:
    spectrogram = Spectrogram(power=power)
    for path in fsdd_files[:4]:
        waveform = load_audio(path, sample_rate=8000)
        reference = np.abs(librosa.stft(waveform.numpy(), **FRAMING)) ** power  # [129, frames]
        ours = run_alone(spectrogram, waveform).numpy()
        assert ours.shape == reference.shape == (129, 1 + waveform.shape[0] // 80)
        # Measured: max |ours - librosa| <= 3e-7 of the largest value (float32 STFT).
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * reference.max(), err_msg=path.name)


def test_mfcc_matches_librosa_on_real_fsdd_files(fsdd_files: list[Path]) -> None:
    mfcc = MFCC()
    for path in fsdd_files:
        waveform = load_audio(path, sample_rate=8000)
        reference = librosa_mfcc(waveform.numpy())
        ours = run_alone(mfcc, waveform).numpy()
        assert ours.shape == reference.shape == (13, 1 + waveform.shape[0] // 80)
        # Measured on these six files: max |ours - librosa| = 1.2e-4 dB (worst: 9_yweweler_30),
        # with coefficients up to about 530 in magnitude: float32 rounding, nothing systematic.
        assert np.abs(ours - reference).max() < 1e-3, path.name


def test_mfcc_passes_its_band_and_sizes_through(fsdd_files: list[Path]) -> None:
    mfcc = MFCC(n_mels=64, n_mfcc=20, f_min=50.0, f_max=3800.0)
    waveform = load_audio(fsdd_files[0], sample_rate=8000)
    reference = librosa_mfcc(waveform.numpy(), n_mels=64, n_mfcc=20, fmin=50.0, fmax=3800.0)
    assert np.abs(run_alone(mfcc, waveform).numpy() - reference).max() < 1e-3


def test_mfcc_of_silence_is_the_decibel_floor() -> None:
    # mel power 0 -> 10 log10(1e-10) = -100 dB in every band: only c0 (the scaled mean) is non-zero.
    coefficients = run_alone(MFCC(n_mels=40), torch.zeros(800))
    torch.testing.assert_close(coefficients[0], torch.full((11,), -100.0 * 40**0.5))
    assert coefficients[1:].abs().max() < 1e-3


FEATURE_MODULES = {
    "spectrogram": lambda: Spectrogram(),
    "magnitude": lambda: Spectrogram(power=1.0),
    "log_mel": lambda: LogMel(),
    "mfcc": lambda: MFCC(),
}


@pytest.mark.parametrize("name", FEATURE_MODULES)
def test_padded_batch_gives_each_utterance_its_own_frames(fsdd_files: list[Path], name: str) -> None:
    module = FEATURE_MODULES[name]()
    waveforms = [load_audio(path, sample_rate=8000) for path in fsdd_files[:4]]
    lengths = torch.tensor([waveform.shape[0] for waveform in waveforms])
    assert len(set(lengths.tolist())) == 4, "the test needs utterances of different lengths"
    # Padding with loud noise, not zeros: samples beyond a length must not reach any valid frame.
    batch = 10 * torch.randn(4, int(lengths.max()), generator=torch.Generator().manual_seed(0))
    for row, waveform in enumerate(waveforms):
        batch[row, : waveform.shape[0]] = waveform

    features, frame_lengths = module(batch, lengths)

    assert frame_lengths.dtype == torch.int64
    assert frame_lengths.tolist() == module.frame_lengths(lengths).tolist() == (1 + lengths // 80).tolist()
    assert features.shape[-1] == int(frame_lengths.max())
    for row, waveform in enumerate(waveforms):
        valid = int(frame_lengths[row])
        alone = run_alone(module, waveform)
        scale = float(alone.abs().max())
        torch.testing.assert_close(features[row, :, :valid], alone, rtol=0, atol=1e-6 * scale)
        assert torch.all(features[row, :, valid:] == 0), "padding frames must be exactly 0"


@pytest.mark.parametrize("name", FEATURE_MODULES)
def test_derived_constants_are_buffers_not_checkpoint_state(name: str) -> None:
    module = FEATURE_MODULES[name]()
    assert module.state_dict() == {}
    assert all(buffer.dtype == torch.float64 for buffer in module.to(torch.float64).buffers())
    # float64 all the way through still works (e.g. for a precise reference run).
    features, _ = module(torch.randn(2, 400, dtype=torch.float64), torch.tensor([400, 160]))
    assert features.dtype == torch.float64


@pytest.mark.parametrize("module_class", [Spectrogram, MFCC])
def test_constructor_is_a_config_schema(module_class: type) -> None:
    parameters = list(inspect.signature(module_class.__init__).parameters.values())[1:]
    for parameter in parameters:
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, parameter.name
        assert parameter.default is not inspect.Parameter.empty, parameter.name
        assert parameter.annotation is not inspect.Parameter.empty, parameter.name
    assert [parameter.default for parameter in parameters][:4] == [8000, 256, 200, 80]


@pytest.mark.parametrize(
    "build",
    [
        lambda: Spectrogram(power=0.0),
        lambda: Spectrogram(win_length=300),
        lambda: Spectrogram(hop_length=0),
        lambda: MFCC(n_mfcc=41),
        lambda: MFCC(n_mfcc=0),
        lambda: MFCC(f_max=5000.0),
    ],
)
def test_rejects_impossible_settings(build) -> None:
    with pytest.raises(ValueError):
        build()


def test_rejects_waveforms_that_are_not_a_batch() -> None:
    with pytest.raises(ConfigError, match="MFCC takes waveforms"):
        MFCC()(torch.zeros(800), torch.tensor([800]))
