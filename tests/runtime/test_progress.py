"""Progress bars on the long pieces of work a user waits for: shown on a terminal (a real
pseudo-terminal here), never in a pipe or a log file."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import soundfile

from cadence.data.manifest import ManifestEntry, write_manifest

REPOSITORY = Path(__file__).resolve().parents[2]
DIGITS = str(REPOSITORY / "recipes" / "fsdd" / "digits.yaml")


def in_terminal(arguments: list[str], environment: dict[str, str], timeout: float = 120.0) -> tuple[int, str]:
    """Run ``python ARGUMENTS`` with a pseudo-terminal as stdin, stdout and stderr; its exit code and all it wrote."""
    controller, terminal = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, where tqdm draws an empty bar: give it a real size.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen([sys.executable, *arguments], stdin=terminal, stdout=terminal, stderr=terminal,
                               env=environment, cwd=REPOSITORY, close_fds=True)
    os.close(terminal)
    written = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process has ended
                break
            if not chunk:
                break
            written += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    return process.wait(timeout=max(1.0, deadline - time.monotonic())), written.decode("utf-8", "replace")


def in_a_pipe(arguments: list[str], environment: dict[str, str]) -> tuple[int, str]:
    finished = subprocess.run([sys.executable, *arguments], env=environment, cwd=REPOSITORY, capture_output=True, text=True,
                              timeout=120)
    return finished.returncode, finished.stdout + finished.stderr


@pytest.fixture
def environment(fsdd_root, tmp_path) -> dict[str, str]:
    return {**os.environ, "CADENCE_FSDD_ROOT": str(fsdd_root), "CADENCE_CACHE": str(tmp_path / "cache")}


@pytest.fixture
def manifest(fsdd_root, tmp_path) -> Path:
    recordings = sorted((fsdd_root / "recordings").glob("*.wav"))[:6]
    entries = [ManifestEntry(id=path.stem, audio=path, duration=soundfile.info(path).duration, label=path.name[0])
               for path in recordings]
    write_manifest(tmp_path / "six.jsonl", entries)
    return tmp_path / "six.jsonl"


@pytest.mark.parametrize(("what", "arguments", "bar"), [
    ("a manifest check", lambda manifest, out: ["-m", "cadence", "data", "check", str(manifest)], "checking six.jsonl"),
    ("a generated corpus", lambda manifest, out: ["-m", "cadence", "data", "connected-digits", "--sizes", "4,2,2",
                                                  "--out", str(out)], "connected digits: train"),
    ("feature statistics", lambda manifest, out: [
        "-m", "cadence", "train", DIGITS, "features=[{name: log_mel, n_mels: 40}, {name: normalize, mode: global}]",
        "data.max_train_utterances=16", "data.max_eval_utterances=8", "trainer.max_epochs=1", "--exp-dir", str(out)],
     "feature statistics"),
    ("a download", lambda manifest, out: ["-c", "from cadence.runtime.logs import DownloadProgress\n"
                                                "with DownloadProgress('downloading x.tar.gz', 2048) as d: d.add(1024)"],
     "downloading x.tar.gz"),
])
def test_long_work_shows_a_bar_on_a_terminal_and_none_in_a_pipe(what, arguments, bar, manifest, environment, tmp_path):
    code, shown = in_terminal(arguments(manifest, tmp_path / "terminal"), environment)
    assert code == 0, shown[-2000:]
    assert bar in shown and "\r" in shown, f"{what}: no bar on the terminal:\n{shown[-2000:]}"  # redrawn in place
    code, piped = in_a_pipe(arguments(manifest, tmp_path / "pipe"), environment)
    assert code == 0, piped[-2000:]
    assert bar not in piped, f"{what}: a bar in a pipe"
