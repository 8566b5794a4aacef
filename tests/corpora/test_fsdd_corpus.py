from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import soundfile

from cadence.corpora import fsdd
from cadence.corpora.fsdd import FSDD_COMMIT, FSDD_TASKS, download_fsdd, find_fsdd, prepare_fsdd
from cadence.data.manifest import read_labels, read_manifest
from cadence.errors import DataError

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]


def take_of(entry_id: str) -> int:
    return int(entry_id.rsplit("_", 1)[1])


def fake_fsdd(folder: Path) -> Path:
    (folder / "recordings").mkdir(parents=True)
    (folder / "recordings" / "0_a_0.wav").write_bytes(b"")
    return folder


# ---------------------------------------------------------------------------- find_fsdd


def test_explicit_root_wins_and_must_hold_recordings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENCE_FSDD_ROOT", str(fake_fsdd(tmp_path / "from_env")))
    assert find_fsdd(fake_fsdd(tmp_path / "explicit")) == tmp_path / "explicit"
    (tmp_path / "no_recordings").mkdir()
    with pytest.raises(DataError, match=r"no_recordings .*expected .*recordings.*CADENCE_FSDD_ROOT"):
        find_fsdd(tmp_path / "no_recordings")


def test_environment_variable_comes_next_and_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENCE_FSDD_ROOT", str(fake_fsdd(tmp_path / "from_env")))
    assert find_fsdd() == tmp_path / "from_env"
    monkeypatch.setenv("CADENCE_FSDD_ROOT", str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"missing \(from CADENCE_FSDD_ROOT\) is not an FSDD folder"):
        find_fsdd()


def test_shared_copy_then_cache_then_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CADENCE_FSDD_ROOT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shared = tmp_path / "shared" / "data" / "fsdd"
    monkeypatch.setattr(fsdd, "_shared_candidates", lambda: [tmp_path / "elsewhere", shared])
    downloads: list[Path] = []
    monkeypatch.setattr(fsdd, "download_fsdd", lambda destination: downloads.append(destination) or destination)

    cache = tmp_path / "cache" / "cadence" / "fsdd"
    assert find_fsdd() == cache and downloads == [cache]
    fake_fsdd(cache)
    assert find_fsdd() == cache and len(downloads) == 1
    fake_fsdd(shared)
    assert find_fsdd() == shared and len(downloads) == 1


def test_default_search_finds_the_shared_corpus(fsdd_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CADENCE_FSDD_ROOT", raising=False)
    if fsdd_root.resolve() not in fsdd._shared_candidates():
        pytest.skip("FSDD is not at the project's shared location here")
    assert find_fsdd() == fsdd_root.resolve()


# ---------------------------------------------------------------------------- prepare_fsdd


def test_prepare_writes_both_tasks_with_official_splits(fsdd_root: Path, tmp_path: Path) -> None:
    written = prepare_fsdd(fsdd_root, tmp_path / "manifests")
    assert list(written) == list(FSDD_TASKS) == ["digits", "speakers"]

    for task, classes in (("digits", list(DIGIT_WORDS)), ("speakers", SPEAKERS)):
        assert set(written[task]) == {"train", "valid", "test"}
        assert read_labels(tmp_path / "manifests" / task / "labels.json") == classes
        splits = {split: read_manifest(path) for split, path in written[task].items()}
        assert {split: len(entries) for split, entries in splits.items()} == {"train": 2400, "valid": 300, "test": 300}
        takes = {split: {take_of(entry.id) for entry in entries} for split, entries in splits.items()}
        assert takes == {"test": set(range(0, 5)), "valid": set(range(5, 10)), "train": set(range(10, 50))}
        for split, entries in splits.items():
            assert [entry.id for entry in entries] == sorted(entry.id for entry in entries)
            assert {entry.label for entry in entries} == set(classes), (task, split)
        entry = splits["test"][0]
        assert entry.id == "0_george_0" and entry.audio == fsdd_root.absolute() / "recordings" / "0_george_0.wav"
        assert entry.duration == soundfile.info(entry.audio).duration
        assert entry.speaker == "george" and entry.text == "zero"
        assert entry.label == ("zero" if task == "digits" else "george")
    first_line = json.loads(written["digits"]["train"].read_text().splitlines()[0])
    assert not Path(first_line["audio"]).is_absolute()


def test_prepare_is_deterministic_and_idempotent(fsdd_root: Path, tmp_path: Path) -> None:
    written = prepare_fsdd(fsdd_root, tmp_path, valid_takes=[7, 11])
    files = sorted(tmp_path.rglob("*"))
    before = {path: path.read_bytes() for path in files if path.is_file()}
    assert len(before) == 8
    assert {take_of(entry.id) for entry in read_manifest(written["speakers"]["valid"])} == {7, 11}
    prepare_fsdd(fsdd_root, tmp_path, valid_takes=[7, 11])
    assert sorted(tmp_path.rglob("*")) == files
    assert {path: path.read_bytes() for path in files if path.is_file()} == before


@pytest.mark.parametrize(
    ("takes", "expected"),
    [([3, 7], r"\[3\] are official test takes"), ([], "non-empty"), ([60], "no recordings fall in the 'valid' split")],
)
def test_prepare_rejects_bad_validation_takes(fsdd_root: Path, tmp_path: Path, takes: list[int], expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        prepare_fsdd(fsdd_root, tmp_path, valid_takes=takes)


def test_prepare_rejects_foreign_file_names(fsdd_root: Path, tmp_path: Path) -> None:
    (tmp_path / "root" / "recordings").mkdir(parents=True)
    shutil.copy(fsdd_root / "recordings" / "0_george_0.wav", tmp_path / "root" / "recordings" / "hello.wav")
    with pytest.raises(DataError, match=r"hello\.wav: not an FSDD recording name"):
        prepare_fsdd(tmp_path / "root", tmp_path / "out")


# ---------------------------------------------------------------------------- download_fsdd


def build_archive(fsdd_root: Path, archive: Path, count: int) -> list[Path]:
    """A GitHub-style archive of ``count`` real recordings, plus members that must never be written."""
    top = f"free-spoken-digit-dataset-{FSDD_COMMIT}"
    recordings = sorted((fsdd_root / "recordings").glob("*.wav"))[::150][:count]
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(fsdd_root / "README.md", arcname=f"{top}/README.md")
        for path in recordings:
            tar.add(path, arcname=f"{top}/recordings/{path.name}")
        payload = b"not audio"
        for name in ("../evil.wav", f"{top}/recordings/../../evil2.wav", str(archive.parent / "absolute_evil.wav")):
            member = tarfile.TarInfo(name)
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        link = tarfile.TarInfo(f"{top}/recordings/9_linked_0.wav")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return recordings


def test_download_extracts_only_safe_recordings(fsdd_root: Path, tmp_path: Path) -> None:
    (tmp_path / "mirror").mkdir()
    archive = tmp_path / "mirror" / "fsdd.tar.gz"
    originals = build_archive(fsdd_root, archive, count=20)
    with tarfile.open(archive) as tar:  # the archive really holds the hostile members
        assert {"../evil.wav", str(tmp_path / "mirror" / "absolute_evil.wav")} <= set(tar.getnames())
    destination = tmp_path / "work" / "cache" / "fsdd"

    assert download_fsdd(destination, url=archive.as_uri(), expected_files=20) == destination

    assert sorted(path.name for path in destination.iterdir()) == ["README.md", "recordings"]
    extracted = sorted((destination / "recordings").iterdir())
    assert [path.name for path in extracted] == [path.name for path in originals]
    assert all(path.read_bytes() == original.read_bytes() for path, original in zip(extracted, originals))
    assert not any(path.is_symlink() for path in extracted)
    assert not [path for path in tmp_path.rglob("*evil*")]
    assert sorted(path.name for path in destination.parent.iterdir()) == ["fsdd"]  # no staging left
    readme = (destination / "README.md").read_text()
    assert "CC BY-SA 4.0" in readme and "Zohar Jackson" in readme
    assert find_fsdd(destination) == destination
    # Already there: nothing is fetched (the URL would fail).
    assert download_fsdd(destination, url=(tmp_path / "nothing.tar.gz").as_uri()) == destination


def test_download_failures_leave_nothing_and_say_how_to_fix(fsdd_root: Path, tmp_path: Path) -> None:
    archive = tmp_path / "fsdd.tar.gz"
    build_archive(fsdd_root, archive, count=5)
    destination = tmp_path / "cache" / "fsdd"
    with pytest.raises(DataError, match=r"holds 5 recordings/\*\.wav files, expected 3000.*--root.*CADENCE_FSDD_ROOT"):
        download_fsdd(destination, url=archive.as_uri())
    assert list(destination.parent.iterdir()) == []
    with pytest.raises(DataError, match=r"could not download FSDD into .*cache/fsdd.*CADENCE_FSDD_ROOT"):
        download_fsdd(destination, url=(tmp_path / "absent.tar.gz").as_uri())
    (tmp_path / "garbage.tar.gz").write_bytes(b"this is no archive")
    with pytest.raises(DataError, match="could not download FSDD"):
        download_fsdd(destination, url=(tmp_path / "garbage.tar.gz").as_uri())
    assert list(destination.parent.iterdir()) == []
    (destination / "stuff").mkdir(parents=True)
    with pytest.raises(DataError, match="not an empty folder"):
        download_fsdd(destination, url=archive.as_uri(), expected_files=5)
