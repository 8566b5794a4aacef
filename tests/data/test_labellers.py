"""The PASE+ signal labellers (cadence.data.labellers): their contract with the pase task
(shapes, lengths, frame alignment, padding, float32, devices), what they measure on signals
whose answer is known (tones, clicks, noise, silence), normalization, and setting validation."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cadence.data.audio import load_audio
from cadence.data.features import MFCC, LogMel, Spectrogram
from cadence.data.labellers import GammatoneFilterbank, LogPowerSpectrum, Prosody
from cadence.data.labellers.prosody import LOG_ENERGY, LOG_F0, VOICING, ZERO_CROSSING_RATE
from cadence.errors import ConfigError, DataError
from cadence.registry import LABELLERS, check_settings

STRIDE = 160
SPECTRAL = ["lps", "lps_long", "fbank", "fbank_long", "mfcc", "mfcc_long", "gammatone", "gammatone_long"]
FRAME_LABELLERS = [*SPECTRAL, "prosody"]
ALL = ["waveform", *FRAME_LABELLERS]
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def build(name: str, sample_rate: int = 8000, **settings) -> torch.nn.Module:
    return LABELLERS.get(name)(sample_rate=sample_rate, stride=STRIDE, **settings)


def tone(frequency: float, sample_rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> torch.Tensor:
    return amplitude * torch.sin(2 * math.pi * frequency * torch.arange(round(seconds * sample_rate)) / sample_rate)


def speechlike(sample_rate: int, seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """A voice-like test signal: a harmonic glide (120 -> 200 Hz) under a syllabic envelope with
    a silent gap, plus a little noise; so every channel of every labeller varies."""
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(round(seconds * sample_rate), dtype=torch.float64) / sample_rate
    phase = 2 * math.pi * (120.0 * time + 40.0 * time**2 / seconds)  # f0 from 120 to 200 Hz
    voice = sum(torch.sin(k * phase) / k for k in range(1, 8))
    envelope = torch.sin(math.pi * 3 * time / seconds).abs() * (time % (seconds / 3) > 0.05)
    noise = 0.01 * torch.randn(time.shape, generator=generator, dtype=torch.float64)
    return (0.3 * envelope * voice + noise).float()


def alone(labeller: torch.nn.Module, waveform: torch.Tensor) -> torch.Tensor:
    targets, _ = labeller(waveform[None, :], torch.tensor([waveform.shape[0]]))
    return targets[0]


def interior(frames: torch.Tensor, window_frames: int = 3) -> torch.Tensor:
    """The frames whose analysis windows lie inside the signal (away from its edges)."""
    return frames[..., window_frames:-window_frames]


# ---------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("sample_rate", [8000, 16000])
@pytest.mark.parametrize("name", ALL)
def test_shapes_lengths_and_zeros_beyond_lengths(name: str, sample_rate: int) -> None:
    labeller = build(name, sample_rate)
    samples = sample_rate // 2 + 37  # not a whole number of frames
    lengths = torch.tensor([samples, 1000, 159, 0])
    targets, target_lengths = labeller(torch.randn(4, samples), lengths)
    frames = samples // STRIDE
    if labeller.rate == "samples":
        assert targets.shape == (4, 1, frames * STRIDE)
        assert target_lengths.tolist() == [frames * STRIDE, 960, 0, 0]
    else:
        assert labeller.rate == "frames"
        assert targets.shape == (4, labeller.size, frames)
        assert target_lengths.tolist() == [frames, 6, 0, 0]
    assert targets.dtype == torch.float32 and target_lengths.dtype == torch.int64
    assert targets.shape[1] == labeller.size
    assert torch.isfinite(targets).all()
    for row, length in enumerate(target_lengths.tolist()):
        assert targets[row, :, length:].eq(0).all()
        if length:
            assert targets[row, :, :length].ne(0).any()


@pytest.mark.parametrize("name", ALL)
def test_a_batch_without_a_whole_frame_or_without_utterances_gives_empty_targets(name: str) -> None:
    labeller = build(name)
    for batch, samples in ((2, STRIDE - 1), (0, 1600), (1, 0)):
        targets, target_lengths = labeller(torch.randn(batch, samples), torch.full((batch,), samples))
        frames = samples // STRIDE
        assert targets.shape == (batch, labeller.size, frames * (STRIDE if labeller.rate == "samples" else 1))
        assert target_lengths.tolist() == [0] * batch


def test_the_defaults_are_those_documented() -> None:
    sizes_8k = {name: build(name).size for name in ALL}
    assert sizes_8k == {"waveform": 1, "lps": 129, "lps_long": 1025, "fbank": 40, "fbank_long": 40, "mfcc": 20,
                        "mfcc_long": 20, "gammatone": 40, "gammatone_long": 40, "prosody": 4}
    windows = {rate: (build("lps", rate).win_length, build("lps_long", rate).win_length) for rate in (8000, 16000)}
    assert windows == {8000: (160, 1600), 16000: (400, 3200)}  # 20 / 200 ms at 8 kHz, 25 / 200 ms at 16 kHz
    assert build("lps", 16000).n_fft == 512 and build("lps", 16000, n_fft=1024).size == 513


@pytest.mark.parametrize("name", ALL)
def test_nothing_is_saved_in_checkpoints(name: str) -> None:
    # Windows, filterbanks and weights derive from the settings: a checkpoint holds none of them.
    assert build(name).state_dict() == {}


@pytest.mark.parametrize("name", FRAME_LABELLERS)
@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_a_click_at_a_frames_centre_peaks_in_that_frame(name: str, sample_rate: int) -> None:
    labeller = build(name, sample_rate, normalize="none")
    for frame in (4, 11):
        waveform = torch.zeros(24 * STRIDE)
        waveform[frame * STRIDE + STRIDE // 2] = 1.0  # the centre of the encoder's frame
        targets = alone(labeller, waveform)
        if name.startswith("mfcc"):
            energy = targets[0]  # c0: the mean of the log mel energies, scaled
        elif name == "prosody":
            energy = targets[LOG_ENERGY]
        else:
            energy = targets.mean(0)
        assert energy.argmax().item() == frame
        # Centred, not just nearest: the neighbours either side see the click alike (half a
        # frame off, frame + 1 would tie with the peak and frame - 1 would fall behind).
        rise = (energy[frame] - energy[frame - 1]).item()
        assert rise > 0.01  # 200 ms windows 10 ms apart (16 kHz) differ little
        assert abs((energy[frame - 1] - energy[frame + 1]).item()) < 1e-3 * rise


@pytest.mark.parametrize("name", ALL)
def test_an_utterance_gets_the_same_targets_alone_or_in_a_noisy_padded_batch(name: str) -> None:
    labeller = build(name, 16000)
    utterances = [speechlike(16000, 0.6, seed=1), speechlike(16000, 0.93, seed=2)[:14_950], speechlike(16000, 0.35, seed=3)]
    lengths = torch.tensor([len(utterance) for utterance in utterances])
    batch = torch.randn(3, int(lengths.max()) + 421)  # the padding holds loud noise
    for row, utterance in enumerate(utterances):
        batch[row, : len(utterance)] = utterance
    targets, target_lengths = labeller(batch, lengths)
    for row, utterance in enumerate(utterances):
        expected = alone(labeller, utterance)
        assert target_lengths[row].item() == expected.shape[-1]
        torch.testing.assert_close(targets[row, :, : expected.shape[-1]], expected, rtol=0, atol=2e-4)
        assert targets[row, :, expected.shape[-1] :].eq(0).all()


@pytest.mark.parametrize("name", ALL)
def test_targets_are_float32_under_autocast_and_from_half_inputs(name: str) -> None:
    labeller = build(name)
    waveforms, lengths = speechlike(8000, 0.5)[None, :].repeat(2, 1), torch.tensor([4000, 3000])
    reference, _ = labeller(waveforms, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast, _ = labeller(waveforms, lengths)
    from_half, _ = labeller(waveforms.half(), lengths)
    assert under_autocast.dtype == from_half.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference, rtol=0, atol=1e-4)
    assert torch.isfinite(from_half).all()


@pytest.mark.skipif(DEVICES == ["cpu"], reason="no accelerator here")
@pytest.mark.parametrize("name", ALL)
def test_an_accelerator_gives_the_targets_of_the_cpu(name: str) -> None:
    waveforms, lengths = torch.stack([speechlike(16000, 0.5, seed=4), torch.randn(8000)]), torch.tensor([8000, 5000])
    # Prosody raw: voicing is a threshold, so a frame on its edge may flip (and move the normalization).
    labeller = build(name, 16000, **({"normalize": "none"} if name == "prosody" else {}))
    on_cpu, cpu_lengths = labeller(waveforms, lengths)
    on_device, device_lengths = labeller.to("cuda")(waveforms.cuda(), lengths.cuda())
    assert on_device.device.type == "cuda" and on_device.dtype == torch.float32
    assert torch.equal(device_lengths.cpu(), cpu_lengths)
    on_device = on_device.cpu()
    if name != "prosody":
        torch.testing.assert_close(on_device, on_cpu, rtol=0, atol=2e-3)
        return
    both = on_cpu[:, VOICING].eq(1) & on_device[:, VOICING].eq(1)
    assert on_cpu[:, VOICING].ne(on_device[:, VOICING]).sum() <= 1 and both.sum() > 10
    torch.testing.assert_close(on_device[:, LOG_F0][both], on_cpu[:, LOG_F0][both], rtol=0, atol=1e-3)
    torch.testing.assert_close(on_device[:, LOG_ENERGY:], on_cpu[:, LOG_ENERGY:], rtol=0, atol=1e-3)


def test_bad_inputs_are_data_errors() -> None:
    labeller = build("lps")
    with pytest.raises(DataError, match=r"labeller lps takes waveforms \[batch, samples\]"):
        labeller(torch.randn(2, 1, 800), torch.tensor([800, 800]))
    with pytest.raises(DataError, match="lengths must be"):
        labeller(torch.randn(2, 800), torch.tensor([800]))


def test_the_waveform_labeller_is_the_clean_signal_on_whole_frames() -> None:
    waveforms = torch.randn(2, 1000)
    targets, target_lengths = build("waveform", normalize="none")(waveforms, torch.tensor([1000, 500]))
    assert target_lengths.tolist() == [960, 480]
    assert torch.equal(targets[0, 0], waveforms[0, :960])
    assert torch.equal(targets[1, 0, :480], waveforms[1, :480]) and targets[1, 0, 480:].eq(0).all()


def test_the_standardized_waveform_is_the_same_signal_at_unit_scale_whatever_its_level() -> None:
    waveforms = torch.randn(2, 1000)
    quiet = 0.02 * waveforms + 0.001  # as loud as FSDD's speech, with a small offset
    targets, _ = build("waveform")(quiet, torch.tensor([1000, 500]))
    for row, valid in enumerate((960, 480)):
        kept = quiet[row, :valid]
        torch.testing.assert_close(targets[row, 0, :valid], (kept - kept.mean()) / kept.std(unbiased=False))
    assert targets[1, 0, 480:].eq(0).all()  # samples beyond an utterance's whole frames stay 0


# ---------------------------------------------------------------------------- spectral values


@pytest.mark.parametrize(
    ("name", "reference"),
    [("mfcc", MFCC), ("mfcc_long", MFCC), ("fbank", LogMel), ("fbank_long", LogMel), ("lps", Spectrogram)],
)
def test_spectral_labellers_are_the_feature_modules_frames_at_the_frame_centres(name: str, reference: type) -> None:
    labeller = build(name, 8000, normalize="none")
    settings = {"sample_rate": 8000, "n_fft": labeller.n_fft, "win_length": labeller.win_length}
    if reference is not Spectrogram:
        settings["n_mels"] = 40
    if reference is MFCC:
        settings["n_mfcc"] = labeller.size
    # At half the hop, the module's odd frames are centred on the encoder's frame centres.
    features = reference(**settings, hop_length=STRIDE // 2)
    waveform = speechlike(8000, 0.8)
    expected = features(waveform[None, :], torch.tensor([len(waveform)]))[0][0, :, 1::2][:, : len(waveform) // STRIDE]
    if reference is Spectrogram:
        expected = torch.log(expected.clamp_min(1e-10))
    ours = alone(labeller, waveform)
    assert ours.shape == expected.shape == (labeller.size, 40)
    scale = expected.abs().max().item()
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5 * scale)


def test_mfcc_matches_the_feature_module_on_a_real_recording(fsdd_files: list[Path]) -> None:
    waveform = load_audio(fsdd_files[1], sample_rate=8000)
    labeller = build("mfcc", 8000, normalize="none", n_mfcc=13)
    features = MFCC(n_fft=256, win_length=160, hop_length=STRIDE // 2, n_mfcc=13)
    expected = features(waveform[None, :], torch.tensor([len(waveform)]))[0][0, :, 1::2][:, : len(waveform) // STRIDE]
    # MFCC values reach hundreds of dB: a float32 rounding bound, as the features' own tests.
    torch.testing.assert_close(alone(labeller, waveform), expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("sample_rate", [8000, 16000])
@pytest.mark.parametrize("name", ["lps", "lps_long"])
def test_the_log_power_spectrum_of_a_tone_peaks_in_its_bin(name: str, sample_rate: int) -> None:
    labeller = build(name, sample_rate, normalize="none")
    bin_hz = sample_rate / labeller.n_fft
    for frequency in (440.0, 1234.5, 0.3 * sample_rate):
        peaks = interior(alone(labeller, tone(frequency, sample_rate)), 12).argmax(0)  # [T]
        assert peaks.eq(round(frequency / bin_hz)).all(), (frequency, peaks.unique())


@pytest.mark.parametrize("sample_rate", [8000, 16000])
@pytest.mark.parametrize("name", ["gammatone", "gammatone_long"])
def test_gammatone_channels_peak_at_the_centre_frequency_nearest_the_tone(name: str, sample_rate: int) -> None:
    labeller = build(name, sample_rate, normalize="none")
    centres = np.array(labeller.centre_frequencies)
    assert np.all(np.diff(centres) > 0) and (centres[0], centres[-1]) == pytest.approx((100.0, sample_rate / 2))
    for channel in (12, 20, 28, 35):
        # The centre itself and a quarter of the way towards each neighbour: nearest without a doubt.
        for frequency in (centres[channel], 0.75 * centres[channel] + 0.25 * centres[channel + 1],
                          0.75 * centres[channel] + 0.25 * centres[channel - 1]):
            peaks = interior(alone(labeller, tone(frequency, sample_rate)), 12).argmax(0)
            assert peaks.eq(int(np.abs(centres - frequency).argmin())).all(), (frequency, peaks.unique())


def test_a_gammatone_channel_is_a_4th_order_filter_one_erb_wide() -> None:
    # 4th order, b = 1.019 ERB: a tone b Hz off the centre comes out (1 + 1) ** -4 of the power,
    # 4 log 2 lower in log energy. A 200 ms window resolves the response (a 25 ms one would smear it).
    labeller = build("gammatone_long", 16000, normalize="none")
    for channel in (20, 30):
        centre = labeller.centre_frequencies[channel]
        bandwidth = 1.019 * 24.7 * (4.37 * centre / 1000 + 1)
        level = {offset: interior(alone(labeller, tone(centre + offset, 16000)), 12)[channel].mean().item()
                 for offset in (-bandwidth, 0.0, bandwidth)}
        assert level[0.0] - level[-bandwidth] == pytest.approx(4 * math.log(2), abs=0.05)
        assert level[0.0] - level[bandwidth] == pytest.approx(4 * math.log(2), abs=0.05)


def test_gammatone_centre_frequencies_are_evenly_spaced_in_erbs() -> None:
    centres = np.array(GammatoneFilterbank(16000, STRIDE, n_channels=30, f_min=50.0, f_max=7000.0).centre_frequencies)
    erbs = 21.4 * np.log10(1 + 0.00437 * centres)  # Glasberg & Moore's ERB-rate
    np.testing.assert_allclose(np.diff(erbs), np.diff(erbs)[0], rtol=1e-9)
    assert (centres[0], centres[-1]) == pytest.approx((50.0, 7000.0))


# ---------------------------------------------------------------------------- prosody values


@pytest.mark.parametrize(("frequency", "sample_rate"), [(150.0, 8000), (220.0, 8000), (95.0, 16000), (310.0, 16000)])
def test_the_f0_of_a_tone_is_found_within_2_percent_and_it_is_voiced(frequency: float, sample_rate: int) -> None:
    targets = interior(alone(Prosody(sample_rate, STRIDE, normalize="none"), tone(frequency, sample_rate)))
    assert targets[VOICING].eq(1).all()
    f0 = targets[LOG_F0].exp()
    assert ((f0 - frequency).abs() <= 0.02 * frequency).all(), (f0.min().item(), f0.max().item())
    # Measured: within 0.05%, thanks to the parabola through the peak (whole lags alone are 1% off).
    assert ((f0 - frequency).abs() <= 0.005 * frequency).all(), (f0.min().item(), f0.max().item())


@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_white_noise_and_silence_are_unvoiced(sample_rate: int) -> None:
    prosody = Prosody(sample_rate, STRIDE, normalize="none")
    noise = 0.3 * torch.randn(2 * sample_rate, generator=torch.Generator().manual_seed(0))
    for signal in (noise, torch.zeros(sample_rate)):
        targets = alone(prosody, signal)
        assert targets[VOICING].eq(0).all() and targets[LOG_F0].eq(0).all()


def test_a_silent_chunk_is_at_the_log_energy_floor_and_unvoiced() -> None:
    waveform = tone(200.0, 8000, seconds=1.0)
    waveform[3000:6000] = 0.0  # frames 18.75 .. 37.5: whole windows (320 samples) inside from frame 20 to 35
    targets = alone(Prosody(8000, STRIDE, normalize="none"), waveform)
    silent, sounding = targets[:, 20:36], targets[:, 3:15]
    assert silent[LOG_ENERGY].eq(math.log(1e-10)).all()
    assert silent[VOICING].eq(0).all() and silent[ZERO_CROSSING_RATE].eq(0).all()
    assert sounding[LOG_ENERGY].sub(math.log(0.5**2 / 2)).abs().max() < 0.01  # a tone's power: amplitude^2 / 2
    assert sounding[VOICING].eq(1).all()


def test_a_quiet_periodic_frame_below_silence_db_is_unvoiced() -> None:
    quiet = tone(200.0, 8000, amplitude=1e-4)  # -83 dB
    assert interior(alone(Prosody(8000, STRIDE, normalize="none"), quiet))[VOICING].eq(0).all()
    assert interior(alone(Prosody(8000, STRIDE, normalize="none", silence_db=-100.0), quiet))[VOICING].eq(1).all()


@pytest.mark.parametrize(("frequency", "sample_rate"), [(150.0, 8000), (220.0, 8000), (1000.0, 16000), (313.0, 16000)])
def test_the_zero_crossing_rate_of_a_tone_is_twice_its_frequency_over_the_sample_rate(frequency: float, sample_rate: int) -> None:
    prosody = Prosody(sample_rate, STRIDE, normalize="none")
    rate = interior(alone(prosody, tone(frequency, sample_rate)))[ZERO_CROSSING_RATE]
    expected = 2 * frequency / sample_rate
    # Counting crossings in a window is exact to one crossing; on average over frames, to 3%.
    assert (rate - expected).abs().max() <= 1.0 / (prosody.window - 1) + 1e-6
    assert abs(rate.mean().item() - expected) <= 0.03 * expected


def test_prosody_follows_the_voice_in_real_speech(fsdd_files: list[Path]) -> None:
    # Measured on these recordings: on the frames both call voiced, f0 within 5% of
    # librosa.pyin's on 93 to 100% of them (pyin is no test reference: it takes 13 s to compile).
    prosody = Prosody(8000, STRIDE, normalize="none")
    voiced_frames = 0
    for path in fsdd_files[:3]:
        targets = alone(prosody, load_audio(path, sample_rate=8000))
        voiced = targets[VOICING].eq(1)
        voiced_frames += int(voiced.sum())
        f0 = targets[LOG_F0].exp()
        assert ((f0[voiced] >= 60) & (f0[voiced] <= 400)).all(), path.name
        both = voiced[1:] & voiced[:-1]  # a voice glides: from frame to frame, f0 changes by a few percent
        assert (f0[1:][both] / f0[:-1][both] - 1).abs().median() < 0.03, path.name
    assert voiced_frames > 30


# ---------------------------------------------------------------------------- normalization


def mean_and_variance(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return values.mean(-1), values.var(-1, unbiased=False)


@pytest.mark.parametrize("name", SPECTRAL)
def test_utterance_normalization_gives_zero_mean_and_unit_variance_over_valid_frames(name: str) -> None:
    labeller = build(name, 16000)
    assert labeller.normalize == "utterance"  # the default
    waveforms = torch.stack([speechlike(16000, 0.7, seed=5), torch.randn(11200)])
    targets, target_lengths = labeller(waveforms, torch.tensor([11200, 6000]))
    for row, length in enumerate(target_lengths.tolist()):
        mean, variance = mean_and_variance(targets[row, :, :length])
        torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=1e-4)
        torch.testing.assert_close(variance, torch.ones_like(variance), rtol=0, atol=1e-3)
    raw, _ = build(name, 16000, normalize="none")(waveforms, torch.tensor([11200, 6000]))
    assert raw[0, :, 0].sub(targets[0, :, 0]).abs().max() > 0.1  # "none" keeps the values as they are


def test_prosody_normalization_keeps_voicing_and_standardizes_the_rest() -> None:
    waveforms = torch.stack([speechlike(8000, 1.0, seed=6), speechlike(8000, 1.0, seed=7)])
    lengths = torch.tensor([8000, 5000])
    targets, target_lengths = Prosody(8000, STRIDE)(waveforms, lengths)
    raw, _ = Prosody(8000, STRIDE, normalize="none")(waveforms, lengths)
    assert torch.equal(targets[:, VOICING], raw[:, VOICING]) and set(targets[:, VOICING].unique().tolist()) == {0.0, 1.0}
    for row, length in enumerate(target_lengths.tolist()):
        valid = targets[row, :, :length]
        voiced = valid[VOICING].eq(1)
        assert 5 < voiced.sum() < length
        for values in (valid[LOG_F0][voiced], valid[LOG_ENERGY], valid[ZERO_CROSSING_RATE]):
            mean, variance = mean_and_variance(values)
            assert abs(mean.item()) < 1e-4 and abs(variance.item() - 1) < 1e-3
        assert valid[LOG_F0][~voiced].eq(0).all()


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize("name", ALL)
def test_every_setting_refuses_a_value_of_the_wrong_type_naming_itself(name: str) -> None:
    settings = [parameter for parameter in inspect.signature(LABELLERS.get(name)).parameters
                if parameter not in ("sample_rate", "stride")]
    for setting in settings:
        with pytest.raises(ValueError, match=rf"^{setting}: "):
            check_settings(LABELLERS, name, {setting: True})  # true is neither a number nor a normalization
    with pytest.raises(ValueError, match="hop_length: Extra inputs are not permitted"):
        check_settings(LABELLERS, name, {"hop_length": 80})  # the hop is the encoder's stride, never a setting


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("lps", {"window_seconds": 0}, "window_seconds: Input should be greater than 0"),
        ("lps", {"n_fft": 0}, "n_fft: Input should be greater than or equal to 1"),
        ("lps", {"normalize": "global"}, "normalize: Input should be 'utterance' or 'none'"),
        ("fbank_long", {"n_mels": 0}, "n_mels: Input should be greater than or equal to 1"),
        ("fbank", {"f_min": -1.0}, "f_min: Input should be greater than or equal to 0"),
        ("mfcc", {"n_mfcc": 0}, "n_mfcc: Input should be greater than or equal to 1"),
        ("mfcc_long", {"f_max": 0}, "f_max: Input should be greater than 0"),
        ("gammatone", {"n_channels": 0}, "n_channels: Input should be greater than or equal to 1"),
        ("gammatone_long", {"f_min": 0}, "f_min: Input should be greater than 0"),
        ("prosody", {"f0_min": 0}, "f0_min: Input should be greater than 0"),
        ("prosody", {"voicing_threshold": 1.5}, "voicing_threshold: Input should be less than or equal to 1"),
        ("prosody", {"silence_db": float("nan")}, "silence_db: Input should be a finite number"),
        ("prosody", {"window_seconds": -0.04}, "window_seconds: Input should be greater than 0"),
        ("waveform", {"normalize": "peak"}, "normalize: Input should be .utterance. or .none."),
    ],
)
def test_a_recipe_setting_out_of_bounds_is_refused_at_its_key(name: str, settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_settings(LABELLERS, name, settings)


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("lps", {"n_fft": 128}, r"labeller lps: n_fft=128 is shorter than the window \(160 samples"),
        ("lps_long", {"n_fft": 1024}, r"labeller lps_long: n_fft=1024 is shorter than the window \(1600 samples"),
        ("lps", {"window_seconds": 1e-4}, r"labeller lps: window_seconds=0.0001 is 1 sample\(s\) at 8000 Hz"),
        ("fbank", {"f_max": 5000.0}, r"labeller fbank: f_max=5000.0 is above Nyquist \(4000 Hz"),
        ("fbank_long", {"f_min": 3000.0, "f_max": 2000.0}, "labeller fbank_long: f_min=3000.0 is not below f_max"),
        ("mfcc", {"n_mfcc": 41}, r"labeller mfcc: n_mfcc=41 is more than n_mels \(40\)"),
        ("gammatone", {"f_max": 4001.0}, "labeller gammatone: f_max=4001.0 is above Nyquist"),
        ("gammatone_long", {"f_min": 4000.0}, "labeller gammatone_long: f_min=4000.0 is not below f_max"),
        ("prosody", {"f0_max": 4500.0}, r"labeller prosody: f0_max=4500.0 is above Nyquist"),
        ("prosody", {"f0_min": 400.0}, r"labeller prosody: f0_min=400.0 is not below f0_max"),
        ("prosody", {"window_seconds": 0.02}, r"labeller prosody: window_seconds=0.02 is too short .* give window_seconds >= 0\.0336"),
        ("lps", {"normalize": "global"}, "labeller lps: normalize='global' is not a normalization; give 'utterance' or 'none'"),
    ],
)
def test_settings_that_contradict_each_other_are_config_errors_naming_the_setting(
    name: str, settings: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build(name, 8000, **settings)


@pytest.mark.parametrize(("setting", "value"), [("stride", 0), ("sample_rate", -8000), ("stride", 1.5)])
def test_the_injected_encoder_facts_are_checked(setting: str, value: object) -> None:
    facts = {"sample_rate": 8000, "stride": STRIDE, setting: value}
    with pytest.raises(ConfigError, match=f"labeller lps: {setting} must be a positive number of samples"):
        LogPowerSpectrum(**facts)
