"""The manifest's optional ``alignment`` field: one model class per output frame, written and
read back exactly, refused with ``path:line`` when it is anything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadence.data.manifest import Manifest, ManifestEntry, read_manifest, write_manifest
from cadence.errors import DataError


def test_alignments_round_trip_and_are_columns_of_the_manifest(tmp_path: Path) -> None:
    path = tmp_path / "alignments" / "train.jsonl"
    entries = [
        ManifestEntry(id="a", audio=tmp_path / "a.wav", duration=1.0, text="one two", alignment=[0, 2, 2, 0, 3]),
        ManifestEntry(id="b", audio=tmp_path / "b.wav", duration=0.5, text="one"),  # no alignment
        ManifestEntry(id="c", audio=tmp_path / "c.wav", duration=0.5, alignment=(2**31 - 1,)),
    ]
    write_manifest(path, entries)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["alignment"] == [0, 2, 2, 0, 3] and list(lines[0])[-1] == "alignment"  # written last, as a list
    assert "alignment" not in lines[1]
    read = read_manifest(path)
    assert read == entries and read[0].alignment == (0, 2, 2, 0, 3)
    manifest = Manifest.read(path)
    assert manifest.alignments[0].tolist() == [0, 2, 2, 0, 3] and manifest.alignments[1].tolist() == []
    assert [manifest.entry(index) for index in range(3)] == entries
    assert not manifest.has("alignment") and manifest.first_without("alignment") == 1
    assert manifest.subset([2, 0]).entry(1).alignment == (0, 2, 2, 0, 3)
    write_manifest(tmp_path / "again.jsonl", read)  # what was read writes the same lines
    assert [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()][0]["alignment"] == lines[0]["alignment"]


@pytest.mark.parametrize("value, complaint", [
    ([0, -1, 2], "frame 1 must be a model class"),
    ([0, 1.0], "frame 1 must be a model class"),
    ([0, "1"], "frame 1 must be a model class"),
    ([True, 0], "frame 0 must be a model class"),
    ([2**31], "frame 0 must be a model class"),
    ([], "must be a non-empty list"),
    (3, "must be a non-empty list"),
    ("0 1 2", "must be a non-empty list"),
    ({"0": 1}, "must be a non-empty list"),
])
def test_a_bad_alignment_is_refused_with_file_and_line(tmp_path: Path, value, complaint) -> None:
    path = tmp_path / "bad.jsonl"
    good = {"id": "a", "audio": "a.wav", "duration": 1.0, "alignment": [0, 1]}
    bad = {"id": "b", "audio": "b.wav", "duration": 1.0, "alignment": value}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: field 'alignment' {complaint}"):
        read_manifest(path)
    with pytest.raises(DataError, match=rf"entry 0: field 'alignment' {complaint}"):  # and never written
        write_manifest(tmp_path / "out.jsonl", [{**bad, "audio": str(tmp_path / "b.wav")}])
    assert not (tmp_path / "out.jsonl").exists()
