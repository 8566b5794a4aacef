from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

from cadence import ClassificationTask, Experiment, Trainer
from cadence.runtime.logs import setup_console_logging


def fit_once(directory, loaders):
    train, valid = loaders
    task = ClassificationTask(torch.nn.Linear(6, 3))
    with Experiment(directory, tensorboard=False) as experiment:
        Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), max_epochs=1, experiment=experiment, progress_bar=False).fit(train, valid)


def test_several_trainers_never_duplicate_log_lines(tmp_path, loaders, capfd):
    setup_console_logging()
    setup_console_logging()
    fit_once(tmp_path / "first", loaders)
    fit_once(tmp_path / "second", loaders)
    console = [handler for handler in logging.getLogger("cadence").handlers if getattr(handler, "cadence_console", False)]
    assert len(console) == 1
    for name in ("first", "second"):
        lines = (tmp_path / name / "train.log").read_text().splitlines()
        assert sum(" epoch 1/1 " in line for line in lines) == 1, lines
    printed = capfd.readouterr().err.splitlines()
    assert sum(" epoch 1/1 " in line for line in printed) == 2  # once per trainer


def test_stop_closes_writers_and_is_idempotent(tmp_path):
    experiment = Experiment(tmp_path / "run", tensorboard=True)
    experiment.log_metrics({"val/loss": 0.5, "val/inf": float("inf")}, step=3, epoch=0, split="val")
    experiment.stop()
    experiment.stop()
    experiment.log_metrics({"val/loss": 0.1}, step=4, epoch=0, split="val")  # ignored after stop
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"step": 3, "epoch": 0, "split": "val", "time": records[0]["time"], "val/loss": 0.5, "val/inf": None}]  # strict JSON: non-finite is null
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert not any(isinstance(handler, logging.FileHandler) for handler in logging.getLogger("cadence").handlers)


def test_tensorboard_events_hold_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with Experiment(tmp_path, tensorboard=True) as experiment:
        for step in range(3):
            experiment.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step, epoch=0, split="train")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    values = [event.value for event in events.Scalars("train/loss")]
    assert values == pytest.approx([1.0, 0.5, 1.0 / 3])  # stored as float32


# A script run in its own process: it lowers the file size limit (writes past it fail with
# EFBIG, as on a full disk) once the experiment's writers are open, then writes until one fails.
WRITERS_ON_A_FULL_DISK = r"""
import json, resource, signal, sys
from pathlib import Path
from cadence.errors import StorageError
from cadence.experiment import Experiment
from cadence.runtime.logs import get_logger

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
directory, scenario = Path(sys.argv[1]), sys.argv[2]
experiment = Experiment(directory, tensorboard=scenario == "tensorboard")
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
outcome = {"logged": 0}
try:
    for step in range(200):
        if scenario == "metrics":
            experiment.log_metrics({f"train/value{index}": 0.123456789 for index in range(10)}, step=step, epoch=0, split="train")
        elif scenario == "log":
            get_logger().info("a line of the log %s", "x" * 200)
            experiment.log_metrics({"train/loss": 1.0}, step=step, epoch=0, split="train")
        else:
            experiment.log_text("samples", "y" * 2000, step=step)
        outcome["logged"] += 1
except StorageError as error:
    outcome["raised"] = str(error)
try:
    experiment.stop()
except StorageError as error:
    outcome["raised_at_stop"] = str(error)
print(json.dumps(outcome))
"""


@pytest.mark.parametrize("scenario, failing", [("metrics", "metrics.jsonl"), ("log", "train.log"), ("tensorboard", "tensorboard")])
def test_a_full_disk_under_any_writer_is_one_storage_error_naming_it(tmp_path, scenario, failing):
    completed = subprocess.run([sys.executable, "-c", WRITERS_ON_A_FULL_DISK, str(tmp_path / "run"), scenario],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    # Neither logging's "--- Logging error ---" nor the TensorBoard thread's traceback.
    assert "Traceback" not in completed.stderr and "Exception in thread" not in completed.stderr, completed.stderr
    outcome = json.loads(completed.stdout)
    # Raised once: when the write failed (or, for TensorBoard's thread, at the latest when stopping).
    messages = [outcome[key] for key in ("raised", "raised_at_stop") if key in outcome]
    assert len(messages) == 1, outcome
    assert messages[0].startswith(f"cannot write {tmp_path / 'run' / failing}: File too large;"), messages[0]
    if scenario == "metrics":  # every line logged before the failure is still there
        with Experiment(tmp_path / "run", tensorboard=False) as reopened:
            assert reopened.metrics_lines == outcome["logged"] > 0
        lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == list(range(outcome["logged"]))
