"""PASE+'s distortions as feature stages: what each does to a chosen utterance, the rules they
share (length, padding, p, eval mode, draws, float32), the image-source RIRs and their cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from cadence.data.distortions import AdditiveNoise, BandDrop, Chop, Clipping, Downsample, EdgeTrim, Reverb, image_source
from cadence.data.distortions.chop import chopped_samples
from cadence.data.distortions.image_source import LEAD_SAMPLES, SPEED_OF_SOUND, image_source_rir, sabine_rt60
from cadence.data.pipeline import FeaturePipeline
from cadence.errors import ConfigError, DataError
from cadence.registry import FEATURES

SAMPLE_RATE = 8000
LENGTHS = torch.tensor([1600, 1100, 700])


def tone(hz: float, samples: int = SAMPLE_RATE, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    return torch.sin(2 * math.pi * hz * torch.arange(samples) / sample_rate)


def rms(values: torch.Tensor) -> float:
    return float(values.pow(2).mean().sqrt())


def padded_noise(lengths: torch.Tensor = LENGTHS, seed: int = 0, padding_value: float = 0.0) -> torch.Tensor:
    """``[B, max length]`` white noise, ``padding_value`` beyond each length."""
    waveforms = 0.3 * torch.randn(len(lengths), int(lengths.max()), generator=torch.Generator().manual_seed(seed))
    beyond = torch.arange(waveforms.shape[1])[None, :] >= lengths[:, None]
    return waveforms.masked_fill(beyond, padding_value)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A folder of noise recordings and one of recorded RIRs, both at 16 kHz (read at 8 kHz:
    resampled), and a cache folder for the simulated rooms."""
    root = tmp_path_factory.mktemp("distortions")
    noises, rirs = root / "noises", root / "rirs"
    noises.mkdir()
    (rirs / "hall").mkdir(parents=True)
    rng = np.random.default_rng(0)
    # 50 ms and 0.3 s: shorter than the utterances, so excerpts loop.
    soundfile.write(noises / "fan.wav", 0.1 * rng.standard_normal(800).astype(np.float32), 16000)
    soundfile.write(noises / "street.flac", 0.2 * rng.standard_normal(4800).astype(np.float32), 16000)
    for index, path in enumerate([rirs / "small.wav", rirs / "hall" / "large.wav"]):
        # 30 samples of silence (the propagation delay), the direct path, a decaying tail.
        response = np.zeros(1600, dtype=np.float32)
        response[30] = 0.9
        response[31:] = 0.3 * rng.standard_normal(1569) * np.exp(-np.arange(1569) / (200.0 * (index + 1)))
        soundfile.write(path, response, 16000)
    return {"noises": noises, "rirs": rirs, "cache": root / "cache"}


def build(kind: str, folders: dict[str, Path], p: float = 1.0) -> torch.nn.Module:
    """Each distortion with small settings (a few short simulated rooms)."""
    if kind == "reverb_simulated":
        return Reverb(p=p, simulated_rooms=3, rir_duration_s=0.05, cache_dir=str(folders["cache"]))
    if kind == "reverb_recorded":
        return Reverb(p=p, rir_dir=str(folders["rirs"]))
    if kind == "noise_folder":
        return AdditiveNoise(p=p, noise_dir=str(folders["noises"]))
    if kind == "noise_batch":
        return AdditiveNoise(p=p, source="batch")
    if kind == "edge_trim":  # white noise is one stretch of even level: a shallow threshold trims both its edges
        return EdgeTrim(p=p, edge_p=1.0, threshold_db=(0.1, 0.5))
    return {"band_drop": BandDrop, "clipping": Clipping, "chop": Chop, "downsample": Downsample}[kind](p=p)


KINDS = [
    "reverb_simulated", "reverb_recorded", "noise_folder", "noise_batch", "band_drop", "clipping", "chop", "downsample", "edge_trim",
]


# ---------------------------------------------------------------------------- rules shared by all


@pytest.mark.parametrize("kind", KINDS)
def test_keeps_the_length_and_the_zero_padding_and_p_one_distorts_every_utterance(folders, kind) -> None:
    waveforms = padded_noise()
    distorted, lengths = build(kind, folders)(waveforms, LENGTHS, generator=torch.Generator().manual_seed(1))
    assert distorted.shape == waveforms.shape and distorted.dtype == torch.float32
    assert torch.equal(lengths, LENGTHS)
    for row, length in enumerate(LENGTHS.tolist()):
        assert distorted[row, length:].eq(0).all()
        assert not torch.allclose(distorted[row, :length], waveforms[row, :length], atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_what_lies_beyond_a_length_reaches_no_valid_sample_and_comes_out_zero(folders, kind) -> None:
    distortion = build(kind, folders)
    clean, _ = distortion(padded_noise(), LENGTHS, generator=torch.Generator().manual_seed(2))
    dirty, _ = distortion(padded_noise(padding_value=5.0), LENGTHS, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(dirty, clean, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_is_the_identity_in_eval_mode_and_at_p_zero(folders, kind) -> None:
    waveforms = padded_noise()
    assert build(kind, folders).eval()(waveforms, LENGTHS)[0] is waveforms
    unchanged, lengths = build(kind, folders, p=0.0)(waveforms, LENGTHS)
    assert torch.equal(unchanged, waveforms) and torch.equal(lengths, LENGTHS)


def test_p_is_each_utterance_own_probability() -> None:
    waveforms = padded_noise(torch.full((400,), 200))
    clipped, _ = Clipping(p=0.3)(waveforms, torch.full((400,), 200), generator=torch.Generator().manual_seed(0))
    changed = (clipped != waveforms).any(dim=-1)
    assert 0.22 < changed.float().mean() < 0.38  # 120 expected, standard deviation 9
    assert (clipped[~changed] == waveforms[~changed]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_a_seed_reproduces_the_output_and_the_draws_do_not_depend_on_the_lengths(folders, kind) -> None:
    """The same seed, the same output (through the global generator too); the generator ends in
    the same state whatever the lengths, so a resumed run draws what the first one did."""
    distortion = build(kind, folders, p=0.5)
    first = distortion(padded_noise(), LENGTHS, generator=torch.Generator().manual_seed(3))[0]
    again = distortion(padded_noise(), LENGTHS, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(first, again)
    torch.manual_seed(4)
    global_first = distortion(padded_noise(), LENGTHS)[0]
    torch.manual_seed(4)
    assert torch.equal(distortion(padded_noise(), LENGTHS)[0], global_first)
    states = []
    for lengths in (LENGTHS, torch.tensor([5, 1600, 0])):
        generator = torch.Generator().manual_seed(5)
        distortion(padded_noise(lengths), lengths, generator=generator)
        states.append(generator.get_state())
    assert torch.equal(*states)


@pytest.mark.parametrize("kind", KINDS)
def test_computes_in_float32_under_autocast(folders, kind) -> None:
    distortion = build(kind, folders)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        distorted, _ = distortion(padded_noise().to(torch.bfloat16), LENGTHS)
    assert distorted.dtype == torch.float32


def test_are_registered_feature_stages_that_chain_in_a_pipeline(folders) -> None:
    assert {"reverb", "additive_noise", "band_drop", "clipping", "chop", "downsample", "edge_trim"} <= set(FEATURES.names())
    pipeline = FeaturePipeline([build(kind, folders) for kind in KINDS])
    distorted, lengths = pipeline(padded_noise(), LENGTHS)
    assert distorted.shape == padded_noise().shape and torch.equal(lengths, LENGTHS)


# ---------------------------------------------------------------------------- additive noise


@pytest.mark.parametrize("source", ["folder", "batch"])
def test_the_realised_snr_is_the_drawn_one(folders, source) -> None:
    noise_dir = str(folders["noises"]) if source == "folder" else None
    waveforms = padded_noise(seed=6)
    for snr_db, tolerance in (((7.5, 7.5), 0.1), ((5.0, 15.0), 0.0)):
        noisy, _ = AdditiveNoise(p=1.0, snr_db=snr_db, source=source, noise_dir=noise_dir)(
            waveforms, LENGTHS, generator=torch.Generator().manual_seed(7)
        )
        for row, length in enumerate(LENGTHS.tolist()):
            speech, added = waveforms[row, :length], noisy[row, :length] - waveforms[row, :length]
            realised = 10 * math.log10(float(speech.pow(2).sum() / added.pow(2).sum()))
            assert snr_db[0] - tolerance - 1e-3 <= realised <= snr_db[1] + tolerance + 1e-3
            assert (added[-200:].diff() != 0).all()  # noise to the end, not silence or a held sample: looped
            assert noisy[row, length:].eq(0).all()


def test_babble_never_adds_an_utterance_to_itself() -> None:
    """Four utterances, four tones: what is added to one is another's tone, and each other one
    in turn, never its own."""
    frequencies = [300.0, 700.0, 1100.0, 1900.0]
    waveforms = torch.stack([tone(hz, 800) for hz in frequencies])
    lengths = torch.full((4,), 800)
    babble = AdditiveNoise(p=1.0, source="batch", snr_db=(0.0, 0.0))
    partners = {row: set() for row in range(4)}
    for seed in range(30):
        noisy, _ = babble(waveforms, lengths, generator=torch.Generator().manual_seed(seed))
        for row in range(4):
            peak_hz = float(torch.fft.rfft(noisy[row] - waveforms[row]).abs().argmax()) * SAMPLE_RATE / 800
            partners[row].add(frequencies.index(peak_hz))
    assert all(row not in found for row, found in partners.items())
    assert all(len(found) == 3 for found in partners.values())
    single = torch.randn(1, 100)
    assert torch.equal(babble(single, torch.tensor([100]))[0], single)  # no other utterance: left clean


# ---------------------------------------------------------------------------- filters, clipping, chop


def test_band_drop_removes_a_tone_inside_the_band_and_keeps_one_outside() -> None:
    # Centre 1000..1200 Hz, half-width 300..400 Hz: every band drawn covers 900..1300 Hz.
    drop = BandDrop(p=1.0, center_hz=(1000.0, 1200.0), width_hz=(600.0, 800.0))
    tones = torch.stack([tone(1100.0), tone(3000.0), tone(600.0)])
    for seed in range(5):
        dropped, _ = drop(tones, torch.full((3,), SAMPLE_RATE), generator=torch.Generator().manual_seed(seed))
        middle = slice(1000, 7000)  # away from the edges, where the brick-wall filter rings
        assert rms(dropped[0, middle]) < 0.01 * rms(tones[0, middle])
        assert rms(dropped[1, middle]) == pytest.approx(rms(tones[1, middle]), rel=0.01)
        assert rms(dropped[2, middle]) == pytest.approx(rms(tones[2, middle]), rel=0.01)


def test_downsample_removes_a_tone_above_the_new_nyquist_frequency_and_keeps_one_below() -> None:
    # New rates 6 to 7 kHz in 16 kHz audio: the band ends between 3 and 3.5 kHz.
    narrow = Downsample(sample_rate=16000, p=1.0, rate_hz=(6000.0, 7000.0))
    tones = torch.stack([tone(4000.0, 16000, 16000), tone(2000.0, 16000, 16000)])
    for seed in range(5):
        kept, _ = narrow(tones, torch.full((2,), 16000), generator=torch.Generator().manual_seed(seed))
        middle = slice(2000, 14000)
        assert rms(kept[0, middle]) < 0.01 * rms(tones[0, middle])
        assert rms(kept[1, middle]) == pytest.approx(rms(tones[1, middle]), rel=0.01)


def test_clipping_clips_at_the_drawn_fraction_of_each_utterance_peak() -> None:
    waveforms = padded_noise()
    peaks = torch.stack([waveforms[row, :length].abs().max() for row, length in enumerate(LENGTHS.tolist())])
    clipped, _ = Clipping(p=1.0, fraction=(0.3, 0.3))(waveforms, LENGTHS)
    assert torch.allclose(clipped.abs().amax(dim=-1), 0.3 * peaks)
    below = waveforms.abs() < 0.3 * peaks[:, None]
    assert torch.equal(clipped[below], waveforms[below])  # the rest passes untouched
    ranged, _ = Clipping(p=1.0, fraction=(0.2, 0.6))(waveforms, LENGTHS, generator=torch.Generator().manual_seed(0))
    ratios = ranged.abs().amax(dim=-1) / peaks
    assert ((ratios >= 0.2 - 1e-6) & (ratios <= 0.6 + 1e-6)).all()


def zero_runs(values: torch.Tensor) -> list[int]:
    """The lengths of the runs of zeros in ``values [samples]``."""
    runs, current = [], 0
    for zero in values.eq(0).tolist() + [False]:
        if zero:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_chop_zeroes_the_drawn_number_of_segments_of_the_drawn_durations() -> None:
    lengths = torch.tensor([1600, 1000, 400, 90])
    ones = (torch.arange(1600)[None, :] < lengths[:, None]).float()  # [4, 1600], 1 on the valid samples
    single = Chop(p=1.0, count=(1, 1), duration_s=(0.01, 0.01))  # 80 samples
    for seed in range(5):
        chopped, _ = single(ones, lengths, generator=torch.Generator().manual_seed(seed))
        for row, length in enumerate(lengths.tolist()):
            assert zero_runs(chopped[row, :length]) == [80]
    several = Chop(p=1.0, count=(2, 3), duration_s=(0.005, 0.01))  # 40 to 80 samples each, may overlap
    for seed in range(5):
        chopped, _ = several(ones, lengths, generator=torch.Generator().manual_seed(seed))
        for row, length in enumerate(lengths.tolist()[:3]):
            runs = zero_runs(chopped[row, :length])
            assert 1 <= len(runs) <= 3 and 40 <= sum(runs) <= 240 and max(runs) >= 40
    # A segment longer than the utterance chops all of it, never beyond it.
    whole = chopped_samples(torch.full((1, 3), 0.5, dtype=torch.float64), torch.tensor([50]), 60, (1, 1), (0.1, 0.1), 8000)
    assert whole[0, :50].all() and not whole[0, 50:].any()


# ---------------------------------------------------------------------------- reverberation


def energy_decay_rt60(response: np.ndarray, sample_rate: int) -> float:
    """RT60 from Schroeder's backward-integrated energy decay, a line fitted from -5 to -25 dB (T20)."""
    remaining = np.cumsum(response[::-1] ** 2)[::-1]
    decibels = 10 * np.log10(remaining / remaining[0])
    fitted = (decibels <= -5) & (decibels >= -25)
    slope, _ = np.polyfit(np.arange(len(response))[fitted] / sample_rate, decibels[fitted], 1)
    return -60.0 / slope


@pytest.mark.parametrize("room, absorption", [((5.0, 4.0, 3.0), 0.2), ((8.0, 6.0, 3.5), 0.3)])
def test_image_source_decay_agrees_with_sabine(room, absorption) -> None:
    """How: the response's T20 (above) against Sabine's ``0.161 V / (S a)``, within 15%.

    Why 15%: Sabine's formula assumes a diffuse field and small absorption; for these rooms
    Eyring's (exact for a diffuse field at any absorption) is 10-16% shorter, and a shoebox
    with specular walls only decays as a blend of exponentials, one per direction (Lehmann and
    Johansson, 2008), which lands within a few percent of Sabine here (measured: -1%, +3%).
    The 0.4 s response is over 25 dB past the fit's end, so cutting it biases the fit < 0.5 dB.
    Broken simulations miss by far more: without the high-pass filter the positive arrivals'
    offset stretches T20 by 30%; reflection coefficients of ``1 - a`` instead of
    ``sqrt(1 - a)`` halve it.
    """
    response = image_source_rir(room, (1.1, 1.3, 1.4), (3.7, 2.2, 1.1), absorption, SAMPLE_RATE, 0.4)
    assert energy_decay_rt60(response, SAMPLE_RATE) == pytest.approx(sabine_rt60(room, absorption), rel=0.15)


def test_image_source_direct_path_comes_first_then_the_nearest_wall() -> None:
    room, source, microphone = (5.0, 4.0, 3.0), np.array([1.0, 1.5, 1.2]), np.array([3.5, 2.5, 1.6])
    response = np.abs(image_source_rir(room, source, microphone, 0.3, 16000, 0.05))
    assert response.argmax() == LEAD_SAMPLES  # the direct path, its propagation delay left out
    assert response[:LEAD_SAMPLES].max() < 1e-6 * response.max()  # nothing before it
    # The first first-order reflection: the source mirrored in its nearest wall.
    mirrored = [np.linalg.norm(np.where(np.arange(3) == axis, 2 * wall - source, source) - microphone)
                for axis in range(3) for wall in (0.0, room[axis])]
    expected = (min(mirrored) - np.linalg.norm(source - microphone)) / SPEED_OF_SOUND * 16000 + LEAD_SAMPLES
    first_reflection = LEAD_SAMPLES + 1 + int(np.argmax(response[LEAD_SAMPLES + 1 :] > 0.25 * response.max()))
    assert abs(first_reflection - expected) <= 1


def test_reverb_keeps_the_direct_path_aligned_and_the_level_comparable(folders) -> None:
    impulses = torch.zeros(2, 4000)
    impulses[:, 1000] = 1.0
    noise = padded_noise(torch.tensor([4000, 4000]), seed=8)
    for kind in ("reverb_simulated", "reverb_recorded"):
        reverb = build(kind, folders)
        wet, _ = reverb(impulses, torch.tensor([4000, 4000]), generator=torch.Generator().manual_seed(0))
        assert wet.abs().argmax(dim=-1).tolist() == [1000, 1000]  # not delayed by the source's distance
        assert wet[:, :1000 - LEAD_SAMPLES].abs().max() < 1e-4  # no sound before the direct path's kernel
        reverberant, _ = reverb(noise, torch.tensor([4000, 4000]))
        for row in range(2):
            assert 0.7 < rms(reverberant[row]) / rms(noise[row]) < 1.3  # unit-energy responses


def test_recorded_rirs_are_resampled_to_the_data_rate(folders) -> None:
    reverb = build("reverb_recorded", folders)
    assert reverb.responses.shape[0] == 2  # both files, the subfolder's included
    assert reverb.onsets.tolist() == [LEAD_SAMPLES, LEAD_SAMPLES]  # 30 samples at 16 kHz, cut to 8 before the peak
    assert torch.allclose(reverb.responses.norm(dim=-1), torch.ones(2))


def test_simulated_rooms_are_cached_and_a_changed_setting_simulates_again(tmp_path, monkeypatch) -> None:
    simulated = []
    original = image_source.simulate_rooms
    monkeypatch.setattr(image_source, "simulate_rooms", lambda settings: simulated.append(settings) or original(settings))
    settings = dict(simulated_rooms=2, rir_duration_s=0.05, cache_dir=str(tmp_path))
    first = Reverb(**settings)
    second = Reverb(**settings)
    assert len(simulated) == 1  # the second read the cache
    assert torch.equal(first.responses, second.responses)
    for changed in ({"absorption": (0.3, 0.5)}, {"simulation_seed": 1}, {"room_height_m": (2.5, 3.0)}, {"sample_rate": 16000}):
        other = Reverb(**{**settings, **changed})
        assert not torch.equal(other.responses[:, :100], first.responses[:, :100])
    assert len(simulated) == 5 and len(list(tmp_path.glob("image-source-*.npy"))) == 5
    # A damaged cache file is simulated again and replaced.
    (tmp_path / f"image-source-{first.settings.cache_key()}.npy").write_bytes(b"not numpy")
    assert torch.equal(Reverb(**settings).responses, first.responses) and len(simulated) == 6
    # The default cache folder follows $CADENCE_CACHE.
    monkeypatch.setenv("CADENCE_CACHE", str(tmp_path / "elsewhere"))
    Reverb(simulated_rooms=2, rir_duration_s=0.05)
    assert len(list((tmp_path / "elsewhere" / "room-impulse-responses").glob("image-source-*.npy"))) == 1


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Clipping(p=1.5), "clipping: p must be a probability"),
        (lambda: Clipping(fraction=(0.6, 0.2)), "clipping: fraction must be"),
        (lambda: AdditiveNoise(snr_db=(20.0, 10.0), source="batch"), "additive_noise: snr_db must be"),
        (lambda: AdditiveNoise(), "additive_noise: source 'folder' needs noise_dir"),
        (lambda: AdditiveNoise(source="babble"), "additive_noise: source must be"),
        (lambda: BandDrop(width_hz=(100.0, 5000.0)), "band_drop: width_hz must be"),
        (lambda: Downsample(rate_hz=(4000.0, 8000.0)), "downsample: rate_hz must be"),
        (lambda: Chop(count=(-1, 2)), "chop: count must be"),
        (lambda: Chop(sample_rate=0), "chop: sample_rate must be"),
        (lambda: EdgeTrim(threshold_db=(25.0, 10.0)), "edge_trim: threshold_db must be"),
        (lambda: EdgeTrim(edge_p=1.5), "edge_trim: edge_p must be a number >= 0 and <= 1"),
        (lambda: EdgeTrim(max_stretches=0), "edge_trim: max_stretches must be an integer > 0"),
        (lambda: Reverb(wall_distance_m=1.5), "reverb: wall_distance_m"),
        (lambda: Reverb(min_distance_m=50.0, simulated_rooms=1), "reverb: no source and microphone 50 m apart"),
        (lambda: Reverb(absorption=(0.0, 0.5)), "reverb: absorption must be"),
        (lambda: Reverb(rir_duration_s=0.001), "reverb: rir_duration_s"),
    ],
)
def test_refuses_a_bad_setting_naming_it(make, message, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CADENCE_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        make()


def test_refuses_a_missing_or_empty_folder_naming_it(tmp_path) -> None:
    with pytest.raises(DataError, match="noise_dir .* is not a folder"):
        AdditiveNoise(noise_dir=str(tmp_path / "missing"))
    with pytest.raises(DataError, match="rir_dir .* holds no audio files"):
        Reverb(rir_dir=str(tmp_path))


def test_refuses_features_instead_of_waveforms() -> None:
    with pytest.raises(ConfigError, match="list it before the waveform transform"):
        Clipping(p=1.0)(torch.randn(2, 40, 10), torch.tensor([10, 10]))
