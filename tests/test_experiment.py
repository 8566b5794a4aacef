from __future__ import annotations

import json
import logging

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
    assert records == [{"step": 3, "epoch": 0, "split": "val", "time": records[0]["time"], "val/loss": 0.5, "val/inf": "inf"}]
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
