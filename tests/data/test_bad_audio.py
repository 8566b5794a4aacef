"""Each damaged file of the bad_audio_files fixture gives its own BadAudio reason,
through load_audio and through check_manifest; so do float files with NaN, infinite or
int16-scaled samples, and missing files."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from cadence.data.audio import BAD_AUDIO_REASONS, OUT_OF_RANGE_PEAK, BadAudio, load_audio
from cadence.data.dataset import AudioDataset, Skipped
from cadence.data.inspect import check_manifest
from cadence.data.manifest import Manifest, ManifestEntry, write_manifest
from cadence.data.processor import AudioDataProcessor

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


def test_a_cut_wav_is_truncated_by_its_header_without_a_duration(bad_audio_files: dict[str, Path]) -> None:
    # libsndfile reads the half that is there; the header's data size says what is missing.
    with pytest.raises(BadAudio) as caught:
        load_audio(bad_audio_files["truncated"], 8000)
    assert caught.value.reason == "truncated"
    assert "cut short: its header declares 8000 bytes of audio data (0.500 s), the file holds 3978 (0.249 s)" in str(caught.value)
    # Intact but shorter than the manifest says: the same reason, the other detail.
    with pytest.raises(BadAudio, match=r"good\.wav: truncated: shorter than its manifest entry: 0\.500 s of audio where 0\.700 s"):
        load_audio(bad_audio_files["good"], 8000, duration=0.7)


def test_check_manifest_finds_a_cut_wav_whose_manifest_has_the_short_duration(bad_audio_files, tmp_path: Path) -> None:
    # A manifest built from the cut file's header (libsndfile says 0.249 s) agrees with the audio.
    cut = bad_audio_files["truncated"]
    write_manifest(tmp_path / "m.jsonl", [ManifestEntry(id="cut", audio=cut, duration=soundfile.info(cut).duration)])
    [item] = check_manifest(tmp_path / "m.jsonl").bad
    assert item.reason == "truncated" and "declares 8000 bytes" in item.message and "holds 3978" in item.message


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "audio" / "gone.wav"
    with pytest.raises(BadAudio) as caught:
        load_audio(missing, 8000)
    assert caught.value.reason == "not_found" and str(caught.value).startswith(f"{missing}: not_found: no such file;")
    assert "relative ones resolve against the manifest's own folder" in str(caught.value)
    (tmp_path / "m.jsonl").write_text('{"id": "gone", "audio": "audio/gone.wav", "duration": 1.0}\n')
    [item] = check_manifest(tmp_path / "m.jsonl").bad
    assert (item.reason, item.path) == ("not_found", missing)
    (tmp_path / "audio").mkdir()
    missing.mkdir()  # something is there, but not a file libsndfile reads
    assert check_manifest(tmp_path / "m.jsonl").bad[0].reason == "unreadable"


# ---------------------------------------------------------------------------- sample values


def _write_float(path: Path, samples: np.ndarray, subtype: str = "FLOAT") -> Path:
    soundfile.write(path, samples.astype(np.float64), 8000, subtype=subtype)
    return path


@pytest.fixture
def float_files(bad_audio_files: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Float WAVs of the good tone: all NaN, one +inf and one -inf sample (DOUBLE), stored with
    int16 scale (peak 9830), and with 6 dB of headroom used (peak 0.6 * 2.5 = 1.5: fine)."""
    tone = soundfile.read(bad_audio_files["good"], dtype="float64")[0]
    infinite = tone.copy()
    infinite[[10, 2000]] = [math.inf, -math.inf]
    return {
        "nan": _write_float(tmp_path / "nan.wav", np.full_like(tone, math.nan)),
        "infinite": _write_float(tmp_path / "infinite.wav", infinite, subtype="DOUBLE"),
        "int16_scaled": _write_float(tmp_path / "int16_scaled.wav", tone * 32768),
        "headroom": _write_float(tmp_path / "headroom.wav", tone * 5),
    }


@pytest.mark.parametrize(
    "case, reason, detail",
    [
        ("nan", "non_finite", "4000 of 4000 samples are not finite (4000 NaN, 0 infinite)"),
        ("infinite", "non_finite", "2 of 4000 samples are not finite (0 NaN, 2 infinite)"),
        ("int16_scaled", "out_of_range", f"peak 9831, over the limit of {OUT_OF_RANGE_PEAK:g} (full scale is 1.0)"),
    ],
)
def test_non_finite_and_out_of_range_samples_are_bad_audio(float_files, case: str, reason: str, detail: str) -> None:
    path = float_files[case]
    for check_content in (True, False):  # chunks of an utterance are judged too
        with pytest.raises(BadAudio) as caught:
            load_audio(path, 8000, check_content=check_content)
        assert caught.value.reason == reason
        assert str(caught.value) == f"{path}: {reason}: {detail}; {BAD_AUDIO_REASONS[reason]}"
    restored = pickle.loads(pickle.dumps(caught.value))
    assert (restored.reason, str(restored)) == (reason, str(caught.value))
    with pytest.raises(BadAudio, match=rf"{case}\.wav: {reason}: .* at offset 0\.1 s"):
        load_audio(path, 8000, offset=0.1, duration=0.2)


def test_float_headroom_above_full_scale_is_fine(float_files) -> None:
    assert load_audio(float_files["headroom"], 8000).abs().max().item() == pytest.approx(1.5, rel=1e-3)


def test_check_manifest_lists_non_finite_and_out_of_range(float_files, tmp_path: Path) -> None:
    entries = [ManifestEntry(id=case, audio=path, duration=0.5) for case, path in float_files.items()]
    write_manifest(tmp_path / "m.jsonl", entries)
    report = check_manifest(tmp_path / "m.jsonl")
    assert {item.id: item.reason for item in report.bad} == {
        "nan": "non_finite", "infinite": "non_finite", "int16_scaled": "out_of_range"
    }
    assert "nan.wav: non_finite: 4000 of 4000 samples are not finite" in report.format()


def test_training_datasets_skip_non_finite_audio_and_evaluation_datasets_raise(float_files, bad_audio_files) -> None:
    entries = [
        ManifestEntry(id=case, audio=path, duration=0.5, label="a")
        for case, path in [("good", bad_audio_files["good"]), ("nan", float_files["nan"])]
    ]
    processor = AudioDataProcessor(8000, label_to_index={"a": 0})
    for preload in (False, True):
        training = AudioDataset(Manifest(entries), processor, preload=preload, skip_bad_audio=True)
        skipped = training[1]
        assert isinstance(skipped, Skipped) and (skipped.id, skipped.reason) == ("nan", "non_finite")
        batch = training.collate([training[0], skipped])
        assert batch.ids == ["good"] and torch.isfinite(batch.inputs).all() and batch.skipped == [skipped]
    with pytest.raises(BadAudio, match=r"nan\.wav: non_finite"):
        AudioDataset(Manifest(entries), processor)[1]


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
