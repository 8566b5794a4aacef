"""cadence.runtime.files: strict JSON, the config hash, and writes that fail with one clear error."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import resource
import signal

import numpy as np
import pytest

from cadence.errors import StorageError
from cadence.runtime.files import config_hash, strict_json, write_bytes_atomic, write_json_atomic, writing


def strict_json_loads(text: str):
    """What a strict parser (JavaScript's, jq's, Go's) accepts: no NaN, Infinity or -Infinity."""
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@contextlib.contextmanager
def file_size_limit(size: int):
    """Writes past ``size`` bytes fail with EFBIG, as on a full disk (SIGXFSZ ignored, so the
    write fails instead of killing the process); root ignores permissions, not this limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_strict_json_writes_null_for_every_non_finite_number():
    content = {"test/loss": math.nan, "best_value": math.inf, "history": [{"val/loss": -math.inf}, (math.nan, 1)],
               "float32": np.float32("nan"), "float64": np.float64(0.5), "count": np.int64(3), "flag": True, "none": None}
    parsed = strict_json_loads(strict_json(content, indent=2))
    assert parsed == {"test/loss": None, "best_value": None, "history": [{"val/loss": None}, [None, 1]],
                      "float32": None, "float64": 0.5, "count": 3, "flag": True, "none": None}


def test_write_json_atomic_is_strict(tmp_path):
    write_json_atomic(tmp_path / "results.json", {"test": {"test/loss": math.nan, "test/accuracy": 1.0}, "path": tmp_path})
    parsed = strict_json_loads((tmp_path / "results.json").read_text())
    assert parsed == {"test": {"test/loss": None, "test/accuracy": 1.0}, "path": str(tmp_path)}


def test_the_config_hash_of_an_existing_config_never_changes():
    config = {"name": "digits", "seed": 0, "optimizer": {"name": "adamw", "lr": 0.003}, "metrics": ["accuracy", "f1"],
              "trainer": {"max_epochs": 30, "clip_grad_norm": None, "deterministic": True}}
    # Recorded in experiment folders and checkpoints: a change would make old runs look different.
    assert config_hash(config) == "d21a90ff4e832f4a857e2b264e8b23ec39e863640dab51ae563e7e4459889430"


def test_a_write_past_the_file_size_limit_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "train.jsonl"
    write_bytes_atomic(path, b"old\n")
    with file_size_limit(1000), pytest.raises(StorageError) as raised:
        write_bytes_atomic(path, b"x" * 5000)
    assert str(raised.value).startswith(f"cannot write {path}: File too large;")
    assert raised.value.path == path and "\n" not in str(raised.value)
    assert path.read_bytes() == b"old\n" and [entry.name for entry in tmp_path.iterdir()] == ["train.jsonl"]  # no temporary file


def test_a_write_into_a_file_standing_where_a_folder_should_is_a_storage_error(tmp_path):
    (tmp_path / "data").write_text("a file, not a folder")
    with pytest.raises(StorageError, match=r"cannot write .*data/train.jsonl: (File exists|Not a directory)"):
        write_bytes_atomic(tmp_path / "data" / "train.jsonl", b"{}\n")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_writing_turns_an_os_error_into_a_storage_error():
    with pytest.raises(StorageError, match="cannot write /dev/full: No space left on device") as raised:
        with writing("/dev/full"), open("/dev/full", "w") as handle:
            handle.write("x")
            handle.flush()
    assert raised.value.errno == errno.ENOSPC
