"""cadence.runtime.logs: the console says what level a line is; a failing log file is reported, not printed."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from cadence.commands import cli
from cadence.errors import StorageError
from cadence.runtime.logs import add_file_logging, get_logger, remove_handler, setup_console_logging


def test_warnings_and_errors_name_their_level_on_the_console_and_information_is_unchanged(capsys):
    setup_console_logging()
    get_logger().info("epoch 1/2  train/loss 0.5")
    get_logger().warning("skipping damaged checkpoint step-3: truncated")
    get_logger().error("the disk is full")
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO epoch 1/2  train/loss 0.5", lines[0]), lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING: skipping damaged checkpoint step-3: truncated", lines[1]), lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d ERROR: the disk is full", lines[2]), lines


def test_every_command_shows_warnings_with_their_level(monkeypatch, capsys):
    # eval and transcribe set up no logging of their own: without the CLI's console handler,
    # Python prints a bare message with no level.
    def warn(arguments):
        get_logger().warning("skipping damaged checkpoint step-3: truncated")
        get_logger().info("not shown outside training")
        return 0

    monkeypatch.setattr(cli, "run_data", warn)
    assert cli.main(["data", "check", "manifest.jsonl"]) == 0
    err = capsys.readouterr().err
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING: skipping damaged checkpoint step-3: truncated\n", err), err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_log_file_that_cannot_be_written_keeps_the_failure_and_prints_no_traceback(tmp_path, capfd):
    log = Path("/dev/full")  # every write: "No space left on device" (a link to it would be refused)
    handler = add_file_logging(log)
    get_logger().info("epoch 1/2")  # never raises into the code that logs
    get_logger().info("epoch 2/2")
    assert isinstance(handler.failure, StorageError)
    assert str(handler.failure).startswith(f"cannot write {log}: No space left on device;")
    remove_handler(handler)  # closing flushes again: no second error, no traceback
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err


def test_a_log_file_that_is_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "someone_elses.txt"
    target.write_text("theirs\n")
    (tmp_path / "train.log").symlink_to(target)
    with pytest.raises(StorageError, match="train.log: it is a symbolic link"):
        add_file_logging(tmp_path / "train.log")
    assert target.read_text() == "theirs\n"
    assert not any(isinstance(handler, logging.FileHandler) for handler in get_logger().handlers)


def test_a_log_file_that_cannot_be_opened_is_a_storage_error(tmp_path):
    (tmp_path / "run").write_text("a file where the experiment folder should be")
    with pytest.raises(StorageError, match="cannot write .*run/train.log: Not a directory"):
        add_file_logging(tmp_path / "run" / "train.log")
    assert not any(isinstance(handler, logging.FileHandler) for handler in get_logger().handlers)
