"""Each damaged file of the bad_audio_files fixture gives its own BadAudio reason,
through load_audio and through check_manifest."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from cadence.data.audio import BAD_AUDIO_REASONS, BadAudio, load_audio
from cadence.data.inspect import check_manifest

# Under the strictest options: no resampling, no mixing, at least 50 ms.
STRICT = {"resample": False, "mono": "error", "min_duration": 0.05}
EXPECTED_REASONS = {
    "zero_bytes": "unreadable",
    "header_only": "empty",
    "truncated": "truncated",
    "wrong_rate": "wrong_rate",
    "stereo": "multichannel",
    "all_zeros": "silent",
    "too_short": "too_short",
}


@pytest.mark.parametrize("case, reason", sorted(EXPECTED_REASONS.items()))
def test_load_audio_names_the_reason_and_the_file(case: str, reason: str, bad_audio_files: dict[str, Path]) -> None:
    path = bad_audio_files[case]
    # The duration an intact file would have, as the manifest records it.
    duration = 0.01 if case == "too_short" else 0.5
    with pytest.raises(BadAudio) as caught:
        load_audio(path, 8000, duration=duration, **STRICT)
    assert caught.value.reason == reason
    assert str(path) in str(caught.value)
    assert BAD_AUDIO_REASONS[reason] in str(caught.value)  # says how to fix it
    # DataLoader workers send it to the main process pickled.
    restored = pickle.loads(pickle.dumps(caught.value))
    assert (restored.reason, restored.path, str(restored)) == (reason, str(path), str(caught.value))


def test_the_good_file_loads_under_the_strictest_options(bad_audio_files: dict[str, Path]) -> None:
    waveform = load_audio(bad_audio_files["good"], 8000, duration=0.5, **STRICT)
    assert waveform.shape == (4000,) and waveform.abs().max() > 0.25


def test_stereo_is_mixed_with_mono_mix(bad_audio_files: dict[str, Path]) -> None:
    good = load_audio(bad_audio_files["good"], 8000)
    mixed = load_audio(bad_audio_files["stereo"], 8000, mono="mix")
    first = load_audio(bad_audio_files["stereo"], 8000, mono="first")
    # Channels are the tone and its half: the mix is three quarters of the tone.
    assert torch.allclose(mixed, 0.75 * good, atol=1e-4)
    assert torch.equal(first, good)


def test_wrong_rate_is_resampled_when_allowed(bad_audio_files: dict[str, Path]) -> None:
    assert load_audio(bad_audio_files["wrong_rate"], 8000).shape == (4000,)


def test_truncated_is_only_seen_against_a_duration(bad_audio_files: dict[str, Path]) -> None:
    # The header of a cut WAV is corrected by libsndfile to the samples really there.
    assert load_audio(bad_audio_files["truncated"], 8000).shape[0] < 2000


def test_check_manifest_reports_every_case_under_strict_options(write_bad_audio_manifest, tmp_path: Path) -> None:
    manifest = write_bad_audio_manifest(tmp_path / "all.jsonl")
    report = check_manifest(manifest, sample_rate=8000, **STRICT)
    assert report.utterances == 8 and not report.is_clean
    assert {item.id: item.reason for item in report.bad} == EXPECTED_REASONS
    assert report.counts_by_reason == {reason: 1 for reason in sorted(EXPECTED_REASONS.values())}
    for item in report.bad:
        assert item.path.name == f"{item.id}.wav" and str(item.path) in item.message
    # Every header but the empty file's was read; the 16 kHz one counts at its own rate.
    assert report.sample_rates == {8000: 6, 16000: 1}


def test_check_manifest_defaults_accept_what_training_would_fix(write_bad_audio_manifest, tmp_path: Path) -> None:
    # Own rate per file, channels mixed, no minimum length: only the broken files remain.
    report = check_manifest(write_bad_audio_manifest(tmp_path / "all.jsonl"))
    assert {item.id: item.reason for item in report.bad} == {
        "zero_bytes": "unreadable",
        "header_only": "empty",
        "truncated": "truncated",
        "all_zeros": "silent",
    }


def test_check_manifest_with_resampling_skips_only_wrong_rate(write_bad_audio_manifest, tmp_path: Path) -> None:
    manifest = write_bad_audio_manifest(tmp_path / "some.jsonl", ["good", "wrong_rate", "stereo"])
    assert check_manifest(manifest, sample_rate=8000, resample=True).is_clean
    report = check_manifest(manifest, sample_rate=8000, resample=False)
    assert [(item.id, item.reason) for item in report.bad] == [("wrong_rate", "wrong_rate")]
