from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from cadence.corpora import connected_digits
from cadence.corpora.connected_digits import (
    CONNECTED_DIGITS_TAKES,
    connected_digits_folder_name,
    default_cache_dir,
    prepare_connected_digits,
)
from cadence.corpora.fsdd import DIGIT_WORDS
from cadence.data.manifest import read_manifest
from cadence.errors import DataError

SIZES = (20, 5, 5)
RATE = 8000


def read_segments(folder: Path, split: str) -> dict[str, list[dict]]:
    lines = (folder / "segments" / f"{split}.jsonl").read_text().splitlines()
    return {record["id"]: record["segments"] for record in map(json.loads, lines)}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in ("corpus.json", ".lock")
    }


@pytest.fixture(scope="module")
def built(fsdd_root: Path, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("connected") / "corpus"
    return folder, prepare_connected_digits(fsdd_root, folder, sizes=SIZES)


@pytest.fixture
def no_generation(monkeypatch):
    """Fails the test if any audio file is written."""
    monkeypatch.setattr(connected_digits, "_write_wav", lambda *args: pytest.fail("audio was regenerated"))


def test_layout_and_counts(built) -> None:
    folder, manifests = built
    assert manifests == {split: folder / f"{split}.jsonl" for split in ("train", "valid", "test")}
    description = json.loads((folder / "corpus.json").read_text())
    assert description["utterances"] == dict(zip(manifests, SIZES))
    assert description["parameters"]["takes"] == {"train": [10, 49], "valid": [5, 9], "test": [0, 4]}
    assert description["source"]["recordings"] == 3000
    for split, size in zip(manifests, SIZES):
        entries = read_manifest(manifests[split])
        assert [entry.id for entry in entries] == [f"{split}-{index:05d}" for index in range(size)]
        assert all(entry.audio == folder / "audio" / split / f"{entry.id}.wav" for entry in entries)
    assert "CC BY-SA 4.0" in (folder / "README.md").read_text()


def test_every_utterance_matches_its_sources(built, fsdd_root: Path) -> None:
    folder, manifests = built
    low, high = round(0.05 * RATE), round(0.25 * RATE)
    for split, manifest in manifests.items():
        segments_of = read_segments(folder, split)
        for entry in read_manifest(manifest):
            samples, rate = soundfile.read(entry.audio, dtype="int16")
            info = soundfile.info(entry.audio)
            assert (rate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
            assert entry.duration == samples.size / RATE  # the manifest tells the true length

            segments = segments_of[entry.id]
            assert 2 <= len(segments) <= 7
            sources = [segment["source"].split("_") for segment in segments]  # digit, speaker, take
            assert {speaker for _, speaker, _ in sources} == {entry.speaker}
            assert all(int(take) in CONNECTED_DIGITS_TAKES[split] for _, _, take in sources)
            assert entry.text == " ".join(DIGIT_WORDS[int(digit)] for digit, _, _ in sources)

            # Source audio copied unchanged, digital silence around it, gaps within the bounds.
            silence = np.ones(samples.size, dtype=bool)
            for segment in segments:
                source, _ = soundfile.read(fsdd_root / "recordings" / f"{segment['source']}.wav", dtype="int16")
                assert np.array_equal(samples[segment["start"] : segment["end"]], source)
                silence[segment["start"] : segment["end"]] = False
            assert not samples[silence].any()
            gaps = [after["start"] - before["end"] for before, after in zip(segments, segments[1:])]
            assert all(low <= gap <= high for gap in gaps)
            assert 0 <= segments[0]["start"] <= low and 0 <= samples.size - segments[-1]["end"] <= low


def test_generation_is_deterministic(built, fsdd_root: Path, tmp_path: Path) -> None:
    folder, _ = built
    prepare_connected_digits(fsdd_root, tmp_path / "again", sizes=SIZES)
    assert folder_bytes(tmp_path / "again") == folder_bytes(folder)
    assert (tmp_path / "again" / "corpus.json").read_text().replace(str(tmp_path / "again"), "") == (
        folder / "corpus.json"
    ).read_text().replace(str(folder), "")


def test_a_split_does_not_depend_on_the_sizes(built, fsdd_root: Path, tmp_path: Path) -> None:
    folder, manifests = built
    smaller = prepare_connected_digits(fsdd_root, tmp_path / "smaller", sizes=(3, 2, 4))
    for split, size in zip(manifests, (3, 2, 4)):
        assert smaller[split].read_text().splitlines() == manifests[split].read_text().splitlines()[:size]
    other_seed = prepare_connected_digits(fsdd_root, tmp_path / "seed1", seed=1, sizes=(3, 2, 4))
    assert other_seed["test"].read_text() != smaller["test"].read_text()


def test_a_matching_corpus_is_reused(built, fsdd_root: Path, no_generation) -> None:
    folder, manifests = built
    assert prepare_connected_digits(fsdd_root, folder, sizes=SIZES) == manifests


def test_other_parameters_regenerate_the_folder(fsdd_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    prepare_connected_digits(fsdd_root, folder, sizes=(4, 2, 2))
    manifests = prepare_connected_digits(fsdd_root, folder, sizes=(3, 1, 1), max_digits=2)
    assert len(list((folder / "audio" / "train").iterdir())) == 3  # the old files are gone
    assert all(entry.text.count(" ") == 1 for entry in read_manifest(manifests["train"]))
    assert json.loads((folder / "corpus.json").read_text())["parameters"]["max_digits"] == 2


def test_an_interrupted_generation_is_redone(fsdd_root: Path, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "corpus"
    calls = []

    def crash_on_the_third_file(path, samples):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        write_wav(path, samples)

    write_wav = connected_digits._write_wav
    monkeypatch.setattr(connected_digits, "_write_wav", crash_on_the_third_file)
    with pytest.raises(KeyboardInterrupt):
        prepare_connected_digits(fsdd_root, folder, sizes=(4, 2, 2))
    assert not (folder / "corpus.json").exists()
    monkeypatch.setattr(connected_digits, "_write_wav", write_wav)
    prepare_connected_digits(fsdd_root, folder, sizes=(4, 2, 2))
    prepare_connected_digits(fsdd_root, tmp_path / "clean", sizes=(4, 2, 2))
    assert folder_bytes(folder) == folder_bytes(tmp_path / "clean")


def test_changed_sources_regenerate(fsdd_root: Path, tmp_path: Path) -> None:
    # A stand-in FSDD of one speaker, linked (not copied) to the real recordings.
    fake_root = tmp_path / "fsdd"
    (fake_root / "recordings").mkdir(parents=True)
    for digit in range(10):
        for take in (0, 5, 10, 11):
            name = f"{digit}_george_{take}.wav"
            (fake_root / "recordings" / name).symlink_to(fsdd_root / "recordings" / name)
    folder = tmp_path / "corpus"
    prepare_connected_digits(fake_root, folder, sizes=(4, 2, 2))
    fingerprint = json.loads((folder / "corpus.json").read_text())["source"]["fingerprint"]
    (fake_root / "recordings" / "3_george_11.wav").unlink()
    prepare_connected_digits(fake_root, folder, sizes=(4, 2, 2))
    assert json.loads((folder / "corpus.json").read_text())["source"]["fingerprint"] != fingerprint
    assert "3_george_11" not in (folder / "segments" / "train.jsonl").read_text()

    (fake_root / "recordings" / "3_george_10.wav").unlink()
    with pytest.raises(DataError, match=r"no recording of digit 3 by 'george' with a take in 10-49 \(the train takes\)"):
        prepare_connected_digits(fake_root, folder, sizes=(4, 2, 2))
    assert (folder / "corpus.json").is_file()  # the previous corpus is kept


def test_a_folder_holding_other_files_is_refused(fsdd_root: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match=r"mine: cannot generate connected digits here, .*\(thesis.tex\)"):
        prepare_connected_digits(fsdd_root, tmp_path / "mine", sizes=(1, 1, 1))
    assert [path.name for path in (tmp_path / "mine").iterdir()] == ["thesis.tex"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "corpus.json").write_text('{"corpus": "something else"}')
    with pytest.raises(DataError, match=r"\(corpus.json\)"):
        prepare_connected_digits(fsdd_root, tmp_path / "other", sizes=(1, 1, 1))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sizes": (1, 1)}, "sizes must be three utterance counts"),
        ({"sizes": (1, 0, 1)}, "sizes must be three utterance counts"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"min_digits": 3, "max_digits": 2}, "need 1 <= min_digits <= max_digits"),
        ({"min_silence": 0.3}, "need 0 <= min_silence <= max_silence"),
    ],
)
def test_invalid_parameters(options: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=message):
        prepare_connected_digits(None, tmp_path / "x", **options)
    assert not (tmp_path / "x").exists()


def test_folder_names_and_the_cache(tmp_path: Path, monkeypatch) -> None:
    default = connected_digits_folder_name()
    assert default.startswith("seed0-4000-500-500-") and default == connected_digits_folder_name(0, [4000, 500, 500])
    assert connected_digits_folder_name(max_silence=0.3) != default
    assert connected_digits_folder_name(seed=1).startswith("seed1-")

    monkeypatch.setenv("CADENCE_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache" / "connected-digits"
    monkeypatch.delenv("CADENCE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "cadence" / "connected-digits"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "cadence" / "connected-digits"
