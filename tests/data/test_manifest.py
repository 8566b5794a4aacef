from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cadence.data.manifest import (
    ManifestEntry,
    manifest_sha256,
    read_labels,
    read_manifest,
    write_labels,
    write_manifest,
)
from cadence.errors import DataError

VALID_LINE = '{"id": "first", "audio": "a.wav", "duration": 1.0}'


def test_round_trip_keeps_every_field_and_stores_relative_paths(tmp_path: Path) -> None:
    manifest = tmp_path / "lists" / "deep" / "train.jsonl"
    entries = [
        ManifestEntry(id="b", audio=tmp_path / "audio" / "b.wav", duration=0.5),
        ManifestEntry(
            id="a",
            audio=tmp_path / "audio" / "a.flac",
            duration=2.25,
            text="héllo wörld",
            speaker="s1",
            label="greeting",
            offset=0.0,
        ),
        ManifestEntry(id="c", audio=tmp_path / "lists" / "deep" / "c.wav", duration=1.0, offset=3.5),
    ]
    write_manifest(manifest, entries)

    assert read_manifest(manifest) == entries  # order kept, paths absolute again
    lines = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    assert [line["audio"] for line in lines] == ["../../audio/b.wav", "../../audio/a.flac", "c.wav"]
    assert "offset" not in lines[0] and lines[1]["offset"] == 0.0 and lines[2]["offset"] == 3.5
    assert list(lines[1]) == ["id", "audio", "duration", "offset", "speaker", "label", "text"]
    assert "héllo" in manifest.read_text(encoding="utf-8")


def test_write_accepts_mappings_overwrites_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("old content\n")
    write_manifest(manifest, [{"id": "x", "audio": str(tmp_path / "x.wav"), "duration": 1, "label": "yes"}])
    assert read_manifest(manifest) == [ManifestEntry(id="x", audio=tmp_path / "x.wav", duration=1.0, label="yes")]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train.jsonl"]


def test_write_rejects_bad_entries(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"entry 1.*'duration'"):
        write_manifest(
            tmp_path / "m.jsonl",
            [{"id": "a", "audio": "a.wav", "duration": 1.0}, {"id": "b", "audio": "b.wav", "duration": -2}],
        )
    with pytest.raises(DataError, match=r"entry 1 repeats id 'a'"):
        write_manifest(tmp_path / "m.jsonl", [{"id": "a", "audio": "a.wav", "duration": 1.0}] * 2)
    assert not (tmp_path / "m.jsonl").exists()


def test_blank_lines_are_ignored_and_line_numbers_count_them(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(VALID_LINE + "\n\n" + '{"id": "b", "audio": "b.wav"}\n')
    with pytest.raises(DataError, match=r"m\.jsonl:3: field 'duration' is missing"):
        read_manifest(manifest)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "b", "audio": "b.wav",', r"invalid JSON"),
        ('["b", "b.wav", 1.0]', r"expected a JSON object"),
        ('{"audio": "b.wav", "duration": 1.0}', r"field 'id' is missing"),
        ('{"id": "b", "duration": 1.0}', r"field 'audio' is missing"),
        ('{"id": "b", "audio": "b.wav"}', r"field 'duration' is missing"),
        ('{"id": 7, "audio": "b.wav", "duration": 1.0}', r"field 'id' must be a non-empty string"),
        ('{"id": "b", "audio": "", "duration": 1.0}', r"field 'audio' must be a non-empty string"),
        ('{"id": "b", "audio": "b.wav", "duration": "1.0"}', r"field 'duration' must be a finite number"),
        ('{"id": "b", "audio": "b.wav", "duration": true}', r"field 'duration' must be a finite number"),
        ('{"id": "b", "audio": "b.wav", "duration": -1}', r"field 'duration' must be a finite number"),
        ('{"id": "b", "audio": "b.wav", "duration": NaN}', r"field 'duration' must be a finite number"),
        ('{"id": "b", "audio": "b.wav", "duration": 1.0, "offset": -0.5}', r"field 'offset' must be a finite number"),
        ('{"id": "b", "audio": "b.wav", "duration": 1.0, "label": 3}', r"field 'label' must be a string"),
        ('{"id": "b", "audio": "b.wav", "duration": 1.0, "speaker": ["s"]}', r"field 'speaker' must be a string"),
        ('{"id": "b", "audio": "b.wav", "duration": 1.0, "text": {}}', r"field 'text' must be a string"),
        ('{"id": "b", "audio": "b.wav", "duration": 1.0, "lable": "x"}', r"field 'lable' .*did you mean 'label'"),
        ('{"id": "first", "audio": "b.wav", "duration": 1.0}', r"field 'id' value 'first' repeats line 1"),
    ],
)
def test_every_validation_error_names_file_line_and_field(tmp_path: Path, line: str, expected: str) -> None:
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text(VALID_LINE + "\n" + line + "\n")
    with pytest.raises(DataError, match=expected) as caught:
        read_manifest(manifest)
    assert str(caught.value).startswith(f"{manifest}:2: ")


def test_missing_and_empty_manifests_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.jsonl: manifest not found"):
        read_manifest(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: manifest has no utterances"):
        read_manifest(tmp_path / "empty.jsonl")


def test_manifest_sha256_hashes_the_bytes(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [ManifestEntry(id="a", audio=tmp_path / "a.wav", duration=1.0)])
    first = manifest_sha256(manifest)
    assert first == hashlib.sha256(manifest.read_bytes()).hexdigest()
    write_manifest(manifest, [ManifestEntry(id="a", audio=tmp_path / "a.wav", duration=1.5)])
    assert manifest_sha256(manifest) != first
    with pytest.raises(DataError, match="nope.jsonl"):
        manifest_sha256(tmp_path / "nope.jsonl")


def test_labels_round_trip_and_validation(tmp_path: Path) -> None:
    write_labels(tmp_path / "labels.json", ["no", "yes"])
    assert read_labels(tmp_path / "labels.json") == ["no", "yes"]
    with pytest.raises(DataError, match="unique"):
        write_labels(tmp_path / "other.json", ["no", "no"])
    (tmp_path / "bad.json").write_text('{"no": 0}')
    with pytest.raises(DataError, match=r"bad\.json: expected a JSON list"):
        read_labels(tmp_path / "bad.json")
    with pytest.raises(DataError, match=r"absent\.json: label file not found"):
        read_labels(tmp_path / "absent.json")


@pytest.mark.parametrize("problem", ["missing manifest", "empty manifest", "missing labels"])
def test_the_commands_an_error_suggests_exist(tmp_path, problem):
    import re
    import shlex

    from cadence.commands.cli import build_parser

    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError) as raised:
        if problem == "missing manifest":
            read_manifest(tmp_path / "missing.jsonl")
        elif problem == "empty manifest":
            read_manifest(tmp_path / "empty.jsonl")
        else:
            read_labels(tmp_path / "absent.json")
    suggested = re.findall(r"`(cadence [^`]+)`", str(raised.value))
    assert suggested, str(raised.value)
    for command in suggested:
        build_parser().parse_args(shlex.split(command)[1:])  # argparse exits on an unknown command
