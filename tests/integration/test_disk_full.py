"""A full disk under a real `cadence train` / `cadence resume`: one line naming the file and
the cause, exit code 2, no traceback, and nothing written before is lost.

The disk is "full" through a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored): a write past
the limit fails with EFBIG, as a write on a full disk fails with ENOSPC, at whatever point the
run reaches a file bigger than the limit. Sizes with the overrides below: a data manifest
~50-430 kB, a checkpoint's tensors ~0.9 MB (the recipe's 64-channel model), every other file
a few kB. So 30 kB fails while the run writes its data manifests, 600 kB when it saves its
first checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cadence.checkpoint.format import load_checkpoint, verify_checkpoint
from cadence.commands import cli
from cadence.runtime.files import file_sha256

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPE = str(REPOSITORY / "recipes" / "fsdd" / "digits.yaml")
TINY = ["data.max_train_utterances=60", "data.max_eval_utterances=20", "trainer.progress_bar=false"]
LOG_LINE = re.compile(r"\d\d:\d\d:\d\d (INFO|WARNING:) ")


def cadence(arguments: list[str], cwd: Path, fsdd_root: Path, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    # No git: provenance would record the checkout's diff (its size changes with the work in
    # progress), and git itself would run under the limit.
    environment = {**os.environ, "CADENCE_FSDD_ROOT": str(fsdd_root), "GIT_DIR": str(cwd / "no-git"), "GIT_OPTIONAL_LOCKS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "cadence", *arguments], cwd=cwd, env=environment, capture_output=True, text=True,
        timeout=600, preexec_fn=limit_file_size if file_size_limit is not None else None,
    )


def the_error_line(completed: subprocess.CompletedProcess) -> str:
    """The one line of stderr that is not the run's log: the error, and nothing after it."""
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr and "Exception" not in completed.stderr, completed.stderr
    lines = [line for line in completed.stderr.splitlines() if not LOG_LINE.match(line)]
    assert len(lines) == 1 and completed.stderr.splitlines()[-1] == lines[0], completed.stderr
    assert lines[0].startswith("cadence: error: "), lines[0]
    return lines[0]


def test_a_full_disk_while_the_run_writes_its_data_manifests(tmp_path, fsdd_root):
    completed = cadence(["train", RECIPE, *TINY, "--exp-dir", str(tmp_path / "run")], tmp_path, fsdd_root, file_size_limit=30_000)
    error = the_error_line(completed)
    assert re.match(rf"cadence: error: cannot write {re.escape(str(tmp_path / 'run' / 'data'))}/\S+\.jsonl: File too large; ", error), error
    assert not (tmp_path / "run").exists()  # nothing was trained: no half-made experiment folder


def test_a_full_disk_while_saving_a_checkpoint_keeps_every_earlier_file(tmp_path, fsdd_root):
    directory = tmp_path / "run"
    completed = cadence(["train", RECIPE, *TINY, "trainer.max_epochs=1", "--exp-dir", str(directory)], tmp_path, fsdd_root)
    assert completed.returncode == 0, completed.stderr
    first = directory / "checkpoints" / "step-000000002"
    verify_checkpoint(first)
    before = {path: path.read_bytes() for path in (first / "manifest.json", first / "state.json", directory / "results.json")}

    completed = cadence(["resume", str(directory), "trainer.max_epochs=2"], tmp_path, fsdd_root, file_size_limit=600_000)
    error = the_error_line(completed)
    second = directory / "checkpoints" / "step-000000004"
    assert error.startswith(f"cadence: error: could not save checkpoint {second}: "), error
    assert "File too large" in error, error

    # The checkpoint saved before, its manifest, the results and the data are intact; no half checkpoint is left.
    verify_checkpoint(first)
    state, metadata = load_checkpoint(first)
    assert metadata["global_step"] == 2 and "task" in state
    assert all(path.read_bytes() == data for path, data in before.items())
    assert sorted(entry.name for entry in (directory / "checkpoints").iterdir()) == ["step-000000002"]
    provenance = json.loads((directory / "provenance.json").read_text())
    for entry in provenance["data"].values():
        assert file_sha256(entry["path"]) == entry["sha256"], entry
    assert all(json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines())

    # With room again, the run resumes from the checkpoint saved before.
    completed = cadence(["resume", str(directory), "trainer.max_epochs=2"], tmp_path, fsdd_root)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["final_checkpoint"] == str(second)


@pytest.mark.parametrize("error_number", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM])
def test_a_full_or_read_only_disk_met_outside_cadences_writers_is_one_line_too(monkeypatch, capsys, error_number):
    # E.g. a third-party writer (TensorBoard's, soundfile's) that raises a plain OSError.
    def fail(arguments):
        raise OSError(error_number, os.strerror(error_number), "/runs/x/code/recipe.yaml")

    monkeypatch.setattr(cli, "run_data", fail)
    assert cli.main(["data", "fsdd", "--out", "x"]) == 2
    assert capsys.readouterr().err == (f"cadence: error: /runs/x/code/recipe.yaml: {os.strerror(error_number)}; "
                                       "check free space and permissions there\n")


def test_any_other_os_error_is_a_bug_and_keeps_its_traceback(monkeypatch):
    def fail(arguments):
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/runs/x/train.log")

    monkeypatch.setattr(cli, "run_data", fail)
    with pytest.raises(OSError, match="Input/output error"):
        cli.main(["data", "fsdd", "--out", "x"])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_the_quarantine_and_generated_audio_on_a_full_disk_name_their_file(tmp_path, capfd):
    import numpy as np

    from cadence.corpora.connected_digits import _write_wav
    from cadence.data.dataset import Skipped
    from cadence.data.loader import Quarantine
    from cadence.errors import StorageError

    full = Path("/dev/full")  # every write: "No space left on device" (a link to it would be refused)
    quarantine = Quarantine(tmp_path / "absent.jsonl")
    quarantine.path = full
    with pytest.raises(StorageError, match=f"cannot write {re.escape(str(full))}: No space left on device"):
        quarantine.record([Skipped(0, "a", "a.wav", "empty", "no samples")], epoch=0)

    audio = tmp_path / "utterance.wav"
    audio.symlink_to("/dev/full")
    with pytest.raises(StorageError, match=f"cannot write {re.escape(str(audio))}: No space left on device"):
        _write_wav(audio, np.zeros(8000, dtype=np.int16))
    assert "Traceback" not in capfd.readouterr().err  # soundfile's callbacks never met the failing file
