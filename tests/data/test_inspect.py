from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from cadence.data import inspect as inspect_module
from cadence.data.inspect import build_manifest, check_manifest
from cadence.data.manifest import ManifestEntry, read_manifest, write_manifest
from cadence.errors import DataError


def write_tone(path: Path, seconds: float, sample_rate: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    time = np.arange(round(seconds * sample_rate)) / sample_rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 300 * time)).astype(np.float32), sample_rate)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """spk1/a.wav (0.5 s, sidecar), spk1/b.flac (0.25 s, 16 kHz), spk2/c.wav (0.1 s, no sidecar), and noise."""
    folder = tmp_path / "corpus"
    write_tone(folder / "spk1" / "a.wav", 0.5)
    (folder / "spk1" / "a.txt").write_text("  hello\nworld \n")
    write_tone(folder / "spk1" / "b.flac", 0.25, sample_rate=16000)
    (folder / "spk1" / "b.txt").write_text("good bye")
    write_tone(folder / "spk2" / "c.wav", 0.1)
    (folder / "spk2" / "notes.md").write_text("not audio")
    write_tone(folder / ".hidden" / "d.wav", 0.1)
    (folder / "spk2" / ".e.wav").write_bytes(b"")  # e.g. a temporary file of a copy in progress
    return folder


# ---------------------------------------------------------------------------- build_manifest


def test_build_manifest_from_sidecar_transcripts(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    # Durations come from the headers: decoding would fail the test.
    monkeypatch.setattr(soundfile, "read", lambda *args, **kwargs: pytest.fail("decoded a file"))
    out = tmp_path / "lists" / "all.jsonl"
    entries = build_manifest(corpus, out)
    assert [(entry.id, entry.duration, entry.text) for entry in entries] == [
        ("spk1/a", 0.5, "hello world"),
        ("spk1/b", 0.25, "good bye"),
        ("spk2/c", 0.1, None),
    ]
    assert read_manifest(out) == entries
    first_line = json.loads(out.read_text().splitlines()[0])
    assert first_line["audio"] == "../corpus/spk1/a.wav"  # relative to the manifest


def test_build_manifest_from_a_transcript_table(corpus: Path, tmp_path: Path) -> None:
    table = tmp_path / "text.tsv"
    table.write_text("spk2/c\tthe  third one\n\nspk1/a\tfirst\r\n")
    entries = build_manifest(corpus, tmp_path / "all.jsonl", transcripts=table)
    # The table replaces the sidecars: b has a sidecar but no line in the table.
    assert {entry.id: entry.text for entry in entries} == {"spk1/a": "first", "spk1/b": None, "spk2/c": "the third one"}


def test_build_manifest_can_limit_extensions(corpus: Path, tmp_path: Path) -> None:
    entries = build_manifest(corpus, tmp_path / "all.jsonl", extensions=["FLAC"])
    assert [entry.id for entry in entries] == ["spk1/b"]


def test_transcript_ids_that_match_no_audio_are_an_error(corpus: Path, tmp_path: Path) -> None:
    table = tmp_path / "text.tsv"
    table.write_text("spk1/a\tfirst\nspk1/a.wav\tsecond\nspk9/z\tthird\n")
    with pytest.raises(DataError, match=r"text.tsv: 2 id\(s\) match no audio file .*'spk1/a.wav', 'spk9/z'.*e.g. 'spk1/a'"):
        build_manifest(corpus, tmp_path / "all.jsonl", transcripts=table)
    assert not (tmp_path / "all.jsonl").exists()


@pytest.mark.parametrize(
    "table, message",
    [
        ("spk1/a first\n", r"text.tsv:1: expected 'id<TAB>text'"),
        ("spk1/a\tone\nspk1/a\ttwo\n", r"text.tsv:2: id 'spk1/a' appears twice"),
    ],
)
def test_malformed_transcript_tables_name_the_line(corpus: Path, tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "text.tsv").write_text(table)
    with pytest.raises(DataError, match=message):
        build_manifest(corpus, tmp_path / "all.jsonl", transcripts=tmp_path / "text.tsv")


def test_missing_transcript_table(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.tsv: transcript file not found"):
        build_manifest(corpus, tmp_path / "all.jsonl", transcripts=tmp_path / "nope.tsv")


def test_empty_or_missing_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no audio here")
    with pytest.raises(DataError, match=r"empty: no audio files found \(looked for \*.wav, \*.flac, \*.ogg"):
        build_manifest(tmp_path / "empty", tmp_path / "all.jsonl")
    with pytest.raises(DataError, match=r"missing: not a folder"):
        build_manifest(tmp_path / "missing", tmp_path / "all.jsonl")


def test_an_unreadable_header_names_the_file(corpus: Path, tmp_path: Path) -> None:
    (corpus / "spk2" / "broken.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(DataError, match=r"spk2/broken.wav: cannot read the audio header"):
        build_manifest(corpus, tmp_path / "all.jsonl")


def test_a_wav_cut_short_of_its_header_is_refused(corpus: Path, tmp_path: Path) -> None:
    # The file: 3778 16-bit samples declared (7556 bytes), 2518 bytes present.
    cut = write_tone(corpus / "spk2" / "cut.wav", 3778 / 8000)  # 16-bit PCM
    cut.write_bytes(cut.read_bytes()[: 44 + 2518])
    assert soundfile.info(cut).frames == 1259  # what libsndfile would have put in the manifest
    message = (
        r"spk2/cut.wav: truncated: the file is cut short: its header declares 7556 bytes of audio data \(0.472 s\), "
        r"the file holds 2518 \(0.157 s\); repair or remove the file"
    )
    with pytest.raises(DataError, match=message):
        build_manifest(corpus, tmp_path / "all.jsonl")
    assert not (tmp_path / "all.jsonl").exists()


def test_two_files_with_one_id_are_an_error(corpus: Path, tmp_path: Path) -> None:
    write_tone(corpus / "spk1" / "a.flac", 0.1)
    with pytest.raises(DataError, match=r"a.(wav|flac) and .*a.(wav|flac) would both get id 'spk1/a'"):
        build_manifest(corpus, tmp_path / "all.jsonl")


# ---------------------------------------------------------------------------- check_manifest


def test_a_clean_manifest_of_real_recordings(fsdd_files: list[Path], tmp_path: Path) -> None:
    entries = [
        ManifestEntry(id=path.stem, audio=path, duration=soundfile.info(path).duration) for path in fsdd_files
    ]
    write_manifest(tmp_path / "fsdd.jsonl", entries)
    report = check_manifest(tmp_path / "fsdd.jsonl", sample_rate=8000, resample=False, mono="error")
    assert report.is_clean and report.utterances == len(fsdd_files)
    assert report.sample_rates == {8000: len(fsdd_files)} and report.longer_than_manifest == []
    assert "no bad audio found" in report.format()


def test_longer_audio_is_listed_but_not_bad(corpus: Path, tmp_path: Path) -> None:
    audio = corpus / "spk1" / "a.wav"  # 0.5 s
    write_manifest(tmp_path / "m.jsonl", [ManifestEntry(id="a", audio=audio, duration=0.3)])
    report = check_manifest(tmp_path / "m.jsonl")
    assert report.is_clean
    [mismatch] = report.longer_than_manifest
    assert (mismatch.id, mismatch.manifest_duration, mismatch.audio_duration) == ("a", 0.3, 0.5)
    assert "a: " in report.format() and "0.500 s, manifest says 0.300 s" in report.format()


def test_segments_are_checked_within_the_file(corpus: Path, tmp_path: Path) -> None:
    audio = corpus / "spk1" / "a.wav"  # 0.5 s
    entries = [
        ManifestEntry(id="inside", audio=audio, duration=0.2, offset=0.1),
        ManifestEntry(id="past_the_end", audio=audio, duration=0.3, offset=0.4),
        ManifestEntry(id="after_the_end", audio=audio, duration=0.1, offset=0.6),
    ]
    write_manifest(tmp_path / "m.jsonl", entries)
    report = check_manifest(tmp_path / "m.jsonl")
    assert [(item.id, item.reason) for item in report.bad] == [("past_the_end", "truncated"), ("after_the_end", "empty")]
    assert "offset 0.4 s" in report.bad[0].message


def test_summary_is_json_and_lists_every_bad_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(inspect_module, "_REPORT_LISTS_AT_MOST", 2)
    entries = [ManifestEntry(id=f"u{index}", audio=tmp_path / f"u{index}.wav", duration=1.0) for index in range(3)]
    write_manifest(tmp_path / "m.jsonl", entries)
    report = check_manifest(tmp_path / "m.jsonl", sample_rate=16000)
    summary = json.loads(json.dumps(report.summary()))
    assert summary["bad"] == 3 and summary["bad_by_reason"] == {"not_found": 3} and not summary["clean"]
    assert [item["id"] for item in summary["bad_utterances"]] == ["u0", "u1", "u2"]
    assert summary["options"] == {"sample_rate": 16000, "resample": True, "mono": "mix", "min_duration": 0.0}
    text = report.format()
    assert "3 bad: not_found 3" in text and "u1.wav" in text and "u2.wav" not in text
    assert "... and 1 more (all are in the JSON summary)" in text


def test_check_manifest_rejects_bad_options_and_missing_manifests(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.jsonl: manifest not found"):
        check_manifest(tmp_path / "nope.jsonl")
    for options in ({"sample_rate": 0}, {"mono": "left"}, {"min_duration": -1}):
        with pytest.raises(ValueError):
            check_manifest(tmp_path / "nope.jsonl", **options)
