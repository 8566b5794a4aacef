from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import os
import tarfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from cadence.corpora import librispeech
from cadence.corpora.librispeech import (
    LIBRISPEECH_MD5,
    LIBRISPEECH_SUBSETS,
    download_librispeech,
    librispeech_speakers,
    librispeech_url,
    prepare_librispeech,
)
from cadence.data.manifest import read_manifest
from cadence.errors import ConfigError, DataError

SPEAKERS_TXT = """\
; Some speakers of LibriSpeech, as in SPEAKERS.TXT
;ID  |SEX| SUBSET           |MINUTES| NAME
60   | M | train-clean-100  | 20.18 | |CBW|Simon
174  | M | dev-clean        |  8.04 | Peter Eastman
1272 | M | dev-clean        | 14.97 | John Rose
"""
# Per subset: {(speaker, chapter): [(frames at 16 kHz, transcript), ...]}
UTTERANCES = {
    "dev-clean-2": {
        ("1272", "128104"): [(1600, "MISTER QUILTER IS THE APOSTLE"), (2400, "NOR IS MISTER QUILTER'S MANNER")],
        ("174", "50561"): [(4000, "FORGOTTEN TOO THE NAME OF GILLIAN")],
    },
    "test-clean": {("1089", "134686"): [(3200, "HE HOPED THERE WOULD BE STEW FOR DINNER")]},
}


def build_tree(folder: Path, subset: str) -> Path:
    """``folder/LibriSpeech`` in LibriSpeech's layout: FLAC files, transcripts, the metadata files."""
    top = folder / "LibriSpeech"
    rng = np.random.default_rng(len(subset))
    for (speaker, chapter), utterances in UTTERANCES[subset].items():
        chapter_folder = top / subset / speaker / chapter
        chapter_folder.mkdir(parents=True)
        lines = []
        for number, (frames, text) in enumerate(utterances):
            utterance = f"{speaker}-{chapter}-{number:04d}"
            samples = (rng.standard_normal(frames) * 0.1).astype(np.float32)
            soundfile.write(chapter_folder / f"{utterance}.flac", samples, 16000, format="FLAC", subtype="PCM_16")
            lines.append(f"{utterance} {text}\n")
        (chapter_folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    (top / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
    for name in ("BOOKS.TXT", "CHAPTERS.TXT", "LICENSE.TXT", "README.TXT"):
        (top / name).write_text(f"{name} of the test archive\n")
    return top


def build_archive(mirror: Path, subset: str, add_members: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    """``mirror/<resource>/<subset>.tar.gz`` as OpenSLR lays it out; ``add_members`` appends more."""
    archive = mirror / str(librispeech.LIBRISPEECH_RESOURCES[subset]) / f"{subset}.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    top = build_tree(mirror / f"tree-{subset}", subset)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(top, arcname="LibriSpeech")
        if add_members is not None:
            add_members(tar)
    return archive


def add_file(tar: tarfile.TarFile, name: str, payload: bytes = b"not audio") -> None:
    member = tarfile.TarInfo(name)
    member.size = len(payload)
    tar.addfile(member, io.BytesIO(payload))


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_nothing_extracted(root: Path, subset: str) -> None:
    assert not (root / "LibriSpeech" / subset).exists()
    assert not (root / "manifests").exists()
    assert not [path for path in root.rglob("*") if "partial" in path.name]
    assert not [path for path in root.rglob("*") if "evil" in path.name]


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    build_archive(tmp_path / "mirror", "dev-clean-2")
    build_archive(tmp_path / "mirror", "test-clean")
    return tmp_path / "mirror"


def md5s_of(mirror: Path) -> dict[str, str]:
    return {path.name.removesuffix(".tar.gz"): md5_of(path) for path in mirror.glob("*/*.tar.gz")}


# ---------------------------------------------------------------------------- names and sums


def test_every_subset_has_a_published_sum_and_its_resource() -> None:
    assert set(LIBRISPEECH_MD5) == set(LIBRISPEECH_SUBSETS) and len(LIBRISPEECH_SUBSETS) == 9
    assert all(len(md5) == 32 for md5 in LIBRISPEECH_MD5.values())
    assert librispeech_url("train-clean-5") == "https://www.openslr.org/resources/31/train-clean-5.tar.gz"
    assert librispeech_url("train-other-500") == "https://www.openslr.org/resources/12/train-other-500.tar.gz"
    with pytest.raises(ConfigError, match=r"'dev_clean' is not a LibriSpeech subset \(did you mean 'dev-clean'\?\)"):
        prepare_librispeech(["dev_clean"], "unused")
    with pytest.raises(ConfigError, match=r"md5s\['dev-clean-2'\] must be 32 hexadecimal digits"):
        prepare_librispeech("dev-clean-2", "unused", md5s={"dev-clean-2": "abc"})


# ---------------------------------------------------------------------------- prepare


def test_prepare_writes_a_manifest_per_subset(mirror: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "corpus"
    with caplog.at_level(logging.WARNING, logger="cadence"):
        written = prepare_librispeech(["dev-clean-2", "test-clean"], root, url=mirror.as_uri(), md5s=md5s_of(mirror))
    assert written == {subset: root / "manifests" / f"{subset}.jsonl" for subset in ("dev-clean-2", "test-clean")}
    assert "NOT verified" not in caplog.text  # both sums were given and matched

    for subset, path in written.items():
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        expected = sorted(
            (f"{speaker}-{chapter}-{number:04d}", frames, text, speaker)
            for (speaker, chapter), utterances in UTTERANCES[subset].items()
            for number, (frames, text) in enumerate(utterances)
        )
        assert [line["id"] for line in lines] == [utterance for utterance, *_ in expected]
        for line, (utterance, frames, text, speaker) in zip(lines, expected):
            speaker_id, chapter, _ = utterance.split("-")
            assert line["audio"] == f"../LibriSpeech/{subset}/{speaker_id}/{chapter}/{utterance}.flac"
            audio = path.parent / line["audio"]
            assert audio.is_file() and soundfile.info(audio).frames == frames
            assert line["duration"] == frames / 16000
            assert (line["text"], line["speaker"]) == (text, speaker)
        assert read_manifest(path)[0].audio == Path(os.path.normpath(path.parent / lines[0]["audio"]))

    top = root / "LibriSpeech"
    metadata = ["BOOKS.TXT", "CHAPTERS.TXT", "LICENSE.TXT", "README.TXT", "SPEAKERS.TXT"]
    assert sorted(path.name for path in top.iterdir()) == [*metadata, "dev-clean-2", "test-clean"]
    assert sorted(path.name for path in root.iterdir()) == [".lock", "LibriSpeech", "README.md", "downloads", "manifests"]
    assert list((root / "downloads").iterdir()) == []  # archives deleted once extracted
    readme = (root / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Panayotov" in readme
    speakers = librispeech_speakers(root)
    assert speakers["60"] == librispeech.LibriSpeechSpeaker(sex="M", subset="train-clean-100", name="|CBW|Simon")
    assert set(speakers) == {"60", "174", "1272"}


def test_a_second_call_reuses_everything(mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "corpus"
    opened: list[str] = []
    real_urlopen = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda request, **options: opened.append(request.full_url) or real_urlopen(request, **options))
    written = prepare_librispeech("dev-clean-2", root, url=mirror.as_uri(), md5s=md5s_of(mirror))
    assert len(opened) == 1
    files = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in root.rglob("*") if path.is_file()}

    assert prepare_librispeech("dev-clean-2", root, url=mirror.as_uri()) == written
    assert len(opened) == 1  # not downloaded again (the default, published sum is never needed either)
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in root.rglob("*") if path.is_file()} == files

    # A manifest lost after extraction (a crash in between): written again from the folder, no download.
    manifest = written["dev-clean-2"]
    manifest.unlink()
    assert prepare_librispeech("dev-clean-2", root, url=mirror.as_uri()) == written
    assert manifest.read_bytes() == files[manifest][1] and len(opened) == 1

    # Manifests copied elsewhere point at the same audio.
    copies = prepare_librispeech("dev-clean-2", root, url=mirror.as_uri(), manifest_dir=tmp_path / "experiment" / "data")
    assert copies == {"dev-clean-2": tmp_path / "experiment" / "data" / "dev-clean-2.jsonl"}
    assert read_manifest(copies["dev-clean-2"]) == read_manifest(manifest) and len(opened) == 1


def test_a_kept_archive_is_extracted_again_without_downloading(mirror: Path, tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    md5s = md5s_of(mirror)
    written = prepare_librispeech("dev-clean-2", root, url=mirror.as_uri(), md5s=md5s, keep_archives=True)
    archive = root / "downloads" / "dev-clean-2.tar.gz"
    assert archive.read_bytes() == (mirror / "31" / "dev-clean-2.tar.gz").read_bytes()
    before = written["dev-clean-2"].read_bytes()
    for path in sorted((root / "LibriSpeech" / "dev-clean-2").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "LibriSpeech" / "dev-clean-2").rmdir()
    written["dev-clean-2"].unlink()
    (root / ".dev-clean-2.partial-killed").mkdir()  # what a killed run leaves: cleared
    absent = (tmp_path / "nowhere").as_uri()
    assert prepare_librispeech("dev-clean-2", root, url=absent, md5s=md5s) == written
    assert written["dev-clean-2"].read_bytes() == before
    assert not (root / ".dev-clean-2.partial-killed").exists()


# ---------------------------------------------------------------------------- resuming downloads


class ArchiveServer(http.server.ThreadingHTTPServer):
    """Serves ``payloads`` by path; ``mode``: "range" (honours Range), "whole" (ignores it) or
    "cut" (announces the whole file, sends half, hangs up)."""

    def __init__(self, payloads: dict[str, bytes], mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payloads, self.mode = payloads, mode
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Range header, bytes sent)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ArchiveServer

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        payload = self.server.payloads.get(self.path)
        asked = self.headers.get("Range")
        if payload is None:
            self.send_error(404)
            return
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and self.server.mode == "range" else 0
        if start >= len(payload) > 0 and asked:
            self.server.requests.append((self.path, asked, 0))  # before answering: the client may finish first
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(payload)}")
            self.end_headers()
            return
        body = payload[start:]
        announced = len(body)
        if self.server.mode == "cut":
            body = body[: len(body) // 2]
            self.close_connection = True
        self.server.requests.append((self.path, asked, len(body)))
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, bytes], str], ArchiveServer]]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    servers: list[ArchiveServer] = []

    def start(payloads: dict[str, bytes], mode: str) -> ArchiveServer:
        server = ArchiveServer(payloads, mode)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("mode", "sent"), [("range", "second half"), ("whole", "all of it")])
def test_an_interrupted_download_completes(mirror: Path, tmp_path: Path, serve, mode: str, sent: str) -> None:
    payload = (mirror / "31" / "dev-clean-2.tar.gz").read_bytes()
    half = len(payload) // 2
    server = serve({"/31/dev-clean-2.tar.gz": payload}, mode)
    root = tmp_path / "corpus"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "dev-clean-2.tar.gz.part").write_bytes(payload[:half])

    archives = download_librispeech("dev-clean-2", root, url=server.url, md5s=md5s_of(mirror))

    assert archives == {"dev-clean-2": root / "downloads" / "dev-clean-2.tar.gz"}
    assert archives["dev-clean-2"].read_bytes() == payload
    assert not (root / "downloads" / "dev-clean-2.tar.gz.part").exists()
    expected_sent = len(payload) - half if sent == "second half" else len(payload)
    assert server.requests == [("/31/dev-clean-2.tar.gz", f"bytes={half}-", expected_sent)]


def test_a_download_cut_short_is_kept_and_resumed(mirror: Path, tmp_path: Path, serve) -> None:
    payload = (mirror / "31" / "dev-clean-2.tar.gz").read_bytes()
    root = tmp_path / "corpus"
    cutting = serve({"/31/dev-clean-2.tar.gz": payload}, "cut")
    with pytest.raises(DataError, match=r"stopped after .* kept in .*dev-clean-2\.tar\.gz\.part: run again to resume"):
        prepare_librispeech("dev-clean-2", root, url=cutting.url, md5s=md5s_of(mirror))
    part = root / "downloads" / "dev-clean-2.tar.gz.part"
    assert part.read_bytes() == payload[: len(payload) // 2]
    assert_nothing_extracted(root, "dev-clean-2")

    resuming = serve({"/31/dev-clean-2.tar.gz": payload}, "range")
    written = prepare_librispeech("dev-clean-2", root, url=resuming.url, md5s=md5s_of(mirror))
    assert len(read_manifest(written["dev-clean-2"])) == 3
    assert resuming.requests == [("/31/dev-clean-2.tar.gz", f"bytes={len(payload) // 2}-", len(payload) - len(payload) // 2)]


def test_a_whole_part_file_is_finished_without_downloading(mirror: Path, tmp_path: Path, serve) -> None:
    payload = (mirror / "31" / "dev-clean-2.tar.gz").read_bytes()
    server = serve({"/31/dev-clean-2.tar.gz": payload}, "range")
    root = tmp_path / "corpus"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "dev-clean-2.tar.gz.part").write_bytes(payload)  # killed before the rename
    archives = download_librispeech("dev-clean-2", root, url=server.url, md5s=md5s_of(mirror))
    assert archives["dev-clean-2"].read_bytes() == payload
    assert server.requests == [("/31/dev-clean-2.tar.gz", f"bytes={len(payload)}-", 0)]  # answered 416


def test_a_part_file_from_a_file_url_is_restarted(mirror: Path, tmp_path: Path) -> None:
    payload = (mirror / "31" / "dev-clean-2.tar.gz").read_bytes()
    root = tmp_path / "corpus"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "dev-clean-2.tar.gz.part").write_bytes(b"x" * (len(payload) // 2))  # wrong bytes: restarted
    archives = download_librispeech(["dev-clean-2"], root, url=mirror.as_uri(), md5s=md5s_of(mirror))
    assert archives["dev-clean-2"].read_bytes() == payload


# ---------------------------------------------------------------------------- refusing


def test_a_checksum_mismatch_is_refused(mirror: Path, tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    actual = md5_of(mirror / "31" / "dev-clean-2.tar.gz")
    published = LIBRISPEECH_MD5["dev-clean-2"]
    with pytest.raises(DataError, match=rf"md5 is {actual}, dev-clean-2's expected sum is {published}; the download was deleted"):
        prepare_librispeech("dev-clean-2", root, url=mirror.as_uri())  # the published sum, by default
    assert list((root / "downloads").iterdir()) == []  # no .part left to resume from
    assert_nothing_extracted(root, "dev-clean-2")

    # An archive already in place is checked too, and never deleted by cadence.
    (root / "downloads" / "dev-clean-2.tar.gz").write_bytes((mirror / "31" / "dev-clean-2.tar.gz").read_bytes())
    with pytest.raises(DataError, match=r"dev-clean-2\.tar\.gz: md5 .* does not match .*delete it and download again"):
        prepare_librispeech("dev-clean-2", root, url=mirror.as_uri(), md5s={"dev-clean-2": "0" * 32})
    assert_nothing_extracted(root, "dev-clean-2")


def test_an_archive_without_a_sum_is_used_with_a_warning(mirror: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cadence"):
        written = prepare_librispeech("dev-clean-2", tmp_path / "corpus", url=mirror.as_uri(), md5s={"dev-clean-2": None})
    assert len(read_manifest(written["dev-clean-2"])) == 3
    assert "dev-clean-2.tar.gz was NOT verified" in caplog.text


def truncated(archive: Path) -> None:
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])


def symlink(tar: tarfile.TarFile) -> None:
    link = tarfile.TarInfo("LibriSpeech/dev-clean-2/1272/128104/1272-128104-0009.flac")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tar.addfile(link)


def hard_link(tar: tarfile.TarFile) -> None:
    link = tarfile.TarInfo("LibriSpeech/dev-clean-2/1272/128104/1272-128104-0009.flac")
    link.type, link.linkname = tarfile.LNKTYPE, "LibriSpeech/SPEAKERS.TXT"
    tar.addfile(link)


def without_transcript(tar: tarfile.TarFile) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(800, dtype=np.float32), 16000, format="FLAC")
    add_file(tar, "LibriSpeech/dev-clean-2/1272/128104/1272-128104-0009.flac", buffer.getvalue())


def bad_flac(tar: tarfile.TarFile) -> None:
    add_file(tar, "LibriSpeech/dev-clean-2/1272/999/1272-999-0000.flac", b"not a flac file")
    add_file(tar, "LibriSpeech/dev-clean-2/1272/999/1272-999.trans.txt", b"1272-999-0000 HELLO\n")


@pytest.mark.parametrize(
    ("damage", "fixing", "problem"),
    [
        (None, truncated, "cannot be read to the end"),
        (lambda tar: add_file(tar, "LibriSpeech/dev-clean-2/../../evil.flac"), None, r"'\.\.'"),
        (lambda tar: add_file(tar, "../evil.txt"), None, r"'\.\.'"),
        (lambda tar: add_file(tar, "/tmp/evil-absolute.txt"), None, "absolute path"),
        (symlink, None, "is a link"),
        (hard_link, None, "is a link"),
        (lambda tar: add_file(tar, "LibriSpeech/dev-clean-2/1272/128104/1272-128104-0000.flac"), None, "twice"),
        (without_transcript, None, "LibriSpeech/dev-clean-2/1272/128104: 1272-128104-0009 has audio without a transcript line"),
        (bad_flac, None, r"LibriSpeech/dev-clean-2/1272/999/1272-999-0000\.flac: cannot read the audio header"),
    ],
    ids=["truncated-gzip", "dotdot-inside", "dotdot", "absolute", "symlink", "hard-link", "repeated", "no-transcript",
         "bad-flac"],
)
def test_a_damaged_archive_is_refused_and_leaves_nothing(tmp_path: Path, damage, fixing, problem: str) -> None:
    archive = build_archive(tmp_path / "mirror", "dev-clean-2", damage)
    if fixing is not None:
        fixing(archive)
    root = tmp_path / "corpus"
    with pytest.raises(DataError, match=rf"dev-clean-2\.tar\.gz.*{problem}.*delete it and download again") as caught:
        prepare_librispeech("dev-clean-2", root, url=(tmp_path / "mirror").as_uri(), md5s={"dev-clean-2": md5_of(archive)})
    assert str(root / "downloads" / "dev-clean-2.tar.gz") in str(caught.value)
    assert_nothing_extracted(root, "dev-clean-2")
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil-absolute.txt").exists()
    assert (root / "downloads" / "dev-clean-2.tar.gz").is_file()  # the message says to delete it; cadence does not


def test_safe_foreign_members_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def extras(tar: tarfile.TarFile) -> None:
        add_file(tar, "LibriSpeech/dev-clean-2/notes.txt")
        add_file(tar, "LibriSpeech/test-clean/1089/134686/1089-134686-0000.flac")
        add_file(tar, "elsewhere/file.txt")

    build_archive(tmp_path / "mirror", "dev-clean-2", extras)
    root = tmp_path / "corpus"
    with caplog.at_level(logging.WARNING, logger="cadence"):
        written = prepare_librispeech("dev-clean-2", root, url=(tmp_path / "mirror").as_uri(), md5s={"dev-clean-2": None})
    assert len(read_manifest(written["dev-clean-2"])) == 3
    assert sorted(path.name for path in (root / "LibriSpeech").iterdir()) == [
        "BOOKS.TXT", "CHAPTERS.TXT", "LICENSE.TXT", "README.TXT", "SPEAKERS.TXT", "dev-clean-2"]
    assert not (root / "LibriSpeech" / "dev-clean-2" / "notes.txt").exists() and not (root / "elsewhere").exists()
    assert caplog.text.count("skipping") == 3


def test_an_archive_of_another_subset_is_refused(mirror: Path, tmp_path: Path) -> None:
    (mirror / "31" / "dev-clean-2.tar.gz").write_bytes((mirror / "12" / "test-clean.tar.gz").read_bytes())
    root = tmp_path / "corpus"
    with pytest.raises(DataError, match=r"holds no LibriSpeech/dev-clean-2/<speaker>/<chapter>/\*\.flac file"):
        prepare_librispeech("dev-clean-2", root, url=mirror.as_uri(), md5s={"dev-clean-2": None})
    assert_nothing_extracted(root, "dev-clean-2")


def test_an_unreachable_mirror_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot download file://.*/12/dev-other\.tar\.gz .*pass url= a mirror"):
        download_librispeech("dev-other", tmp_path / "corpus", url=(tmp_path / "nowhere").as_uri())
    assert list((tmp_path / "corpus" / "downloads").iterdir()) == []


def test_the_librispeech_data_of_a_recipe_downloads_once_and_gives_loaders(mirror: Path, tmp_path: Path) -> None:
    from cadence.corpora.builders import librispeech as librispeech_data

    options = dict(root=str(tmp_path / "corpus"), train="dev-clean-2", valid="test-clean", url=mirror.as_uri(),
                   md5s=md5s_of(mirror), target="none", num_workers=0)
    bundle = librispeech_data(tmp_path / "work", 0, None, **options)
    assert len(bundle.train.dataset) == 3 and len(bundle.valid.dataset) == 1 and bundle.test is None
    assert bundle.facts["sample_rate"] == 16000 and (tmp_path / "work" / "librispeech" / "dev-clean-2.jsonl").is_file()
    batch = next(iter(bundle.train))
    assert batch.inputs.shape[0] >= 1 and int(batch.input_lengths.max()) in (1600, 2400, 4000)
    text = librispeech_data(tmp_path / "work-text", 0, None, **{**options, "target": "text", "valid": None})  # reuses the corpus
    assert len(text.facts["tokenizer"]) > 10
