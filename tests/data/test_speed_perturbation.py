"""Speed perturbation: band-limited resampling that matches soxr, per-utterance factors, exact padding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import soxr
import torch

from cadence.data.speed_perturbation import SpeedPerturbation, change_speed
from cadence.errors import ConfigError

SAMPLE_RATE = 8000


def tone(hz: float, seconds: float = 1.0) -> torch.Tensor:
    return torch.sin(2 * math.pi * hz * torch.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE)


def rms(values: torch.Tensor) -> float:
    return float(values.pow(2).mean().sqrt())


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.8, 1.25, 0.97])
def test_matches_soxr_resampling_to_the_rate_divided_by_the_factor(fsdd_root, factor: float) -> None:
    """Playing a recording ``factor`` times as fast is resampling it to ``rate / factor``: the
    same samples as soxr's very-high-quality resampler, up to the two filters' different edges."""
    recording, rate = soundfile.read(fsdd_root / "recordings" / "8_nicolas_2.wav")
    ours, lengths = change_speed(torch.tensor(recording, dtype=torch.float32)[None], torch.tensor([len(recording)]), factor)
    reference = soxr.resample(recording, rate, rate / factor, quality="VHQ")
    assert lengths.tolist() == [len(reference)] == [ours.shape[1]] == [round(len(recording) / factor)]
    inner = slice(40, len(reference) - 40)  # both treat the outside as silence; their edges differ slightly
    difference = ours[0, inner].numpy() - reference[inner]
    assert np.sqrt((difference**2).mean()) < 0.04 * np.sqrt((reference[inner] ** 2).mean())


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_moves_every_frequency_by_the_factor(factor: float) -> None:
    faster, lengths = change_speed(tone(500)[None], torch.tensor([SAMPLE_RATE]), factor)
    peak_hz = torch.fft.rfft(faster[0]).abs().argmax().item() * SAMPLE_RATE / lengths.item()
    assert peak_hz == pytest.approx(500 * factor, abs=1.0)


def test_a_speed_up_filters_what_would_fold_back_into_the_band() -> None:
    """At 1.1 the new Nyquist frequency is 4000 / 1.1 = 3636 Hz: a 3950 Hz tone would alias to
    3322 Hz unfiltered; a 3000 Hz tone passes."""
    stopped, _ = change_speed(tone(3950)[None], torch.tensor([SAMPLE_RATE]), 1.1)
    passed, _ = change_speed(tone(3000)[None], torch.tensor([SAMPLE_RATE]), 1.1)
    assert rms(stopped[0, 100:-100]) < 0.03 * rms(tone(3950))
    assert rms(passed[0, 100:-100]) == pytest.approx(rms(tone(3000)), rel=0.01)


def test_each_utterance_alone_or_in_a_padded_batch_gives_the_same_samples() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([800, 0, 1, 537])
    batch = torch.randn(4, 800, generator=generator)  # the padding holds noise: it must count as silence
    perturbed, new_lengths = change_speed(batch, lengths, 1.1)
    assert new_lengths.tolist() == [727, 0, 1, 488]
    for row, length in enumerate(lengths.tolist()):
        alone, _ = change_speed(batch[row : row + 1, :length], lengths[row : row + 1], 1.1)
        assert torch.allclose(perturbed[row, : new_lengths[row]], alone[0], atol=1e-5)
        assert perturbed[row, new_lengths[row] :].eq(0).all()


def test_draws_one_factor_per_utterance_from_the_list() -> None:
    perturb = SpeedPerturbation(factors=[0.5, 1.0, 2.0])
    lengths = torch.full((300,), 400)
    _, new_lengths = perturb(torch.randn(300, 400), lengths, generator=torch.Generator().manual_seed(0))
    counts = {length: int((new_lengths == length).sum()) for length in (800, 400, 200)}
    assert sum(counts.values()) == 300 and min(counts.values()) > 70  # each factor about a third of the time
    assert perturb(torch.randn(300, 400), lengths)[0].shape == (300, 800)


def test_the_number_of_draws_depends_on_the_batch_size_only() -> None:
    """So a fixed seed reproduces the augmentation, and a resumed run draws what the first did."""
    states = []
    for lengths in (torch.tensor([100, 100]), torch.tensor([3, 97])):
        generator = torch.Generator().manual_seed(5)
        SpeedPerturbation()(torch.randn(2, 100), lengths, generator=generator)
        states.append(generator.get_state())
    assert torch.equal(*states)


def test_is_the_identity_outside_training_and_at_factor_one() -> None:
    waveforms, lengths = torch.randn(2, 50), torch.tensor([50, 20])
    assert SpeedPerturbation().eval()(waveforms, lengths)[0] is waveforms
    unchanged, unchanged_lengths = SpeedPerturbation(factors=[1.0])(waveforms, lengths)
    assert torch.equal(unchanged, waveforms) and torch.equal(unchanged_lengths, lengths)


def test_refuses_bad_settings_and_features_instead_of_waveforms() -> None:
    with pytest.raises(ValueError, match="factors"):
        SpeedPerturbation(factors=[])
    with pytest.raises(ValueError, match="factors"):
        SpeedPerturbation(factors=[1.0, 0.0])
    with pytest.raises(ConfigError, match="list it before the waveform transform"):
        SpeedPerturbation()(torch.randn(2, 40, 10), torch.tensor([10, 10]))


def test_the_framewise_task_refuses_it() -> None:
    from cadence.data.pipeline import FeaturePipeline
    from cadence.data.tokenizers import WordTokenizer
    from cadence.tasks.framewise import FramewiseTask

    features = FeaturePipeline([SpeedPerturbation()])
    with pytest.raises(ConfigError, match="SpeedPerturbation changes each utterance's duration"):
        FramewiseTask(torch.nn.Identity(), features=features, tokenizer=WordTokenizer.from_texts(["one"]))
