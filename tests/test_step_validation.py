"""``trainer.validate_every_steps``: validation every N updates as well as at each epoch's end,
with the best model, early stopping and exact resume working on those validations."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from cadence import Callback, ClassificationTask, EarlyStopping, Experiment, Trainer, TrainingInterrupted
from cadence.checkpoint.checkpointer import find_best_checkpoint
from cadence.checkpoint.format import load_checkpoint
from cadence.errors import ConfigError
from cadence.metrics import Accuracy


def make_trainer(experiment=None, **options) -> Trainer:
    torch.manual_seed(0)
    # Dropout draws from the global generator: a resume that lost its place in it would show.
    task = ClassificationTask(nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2), nn.Linear(16, 3)))
    return Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), metrics=[Accuracy(num_classes=3)], progress_bar=False,
                   experiment=experiment, **options)


def validated_at(history) -> list[tuple[int, int]]:
    return [(entry["epoch"], entry["step"]) for entry in history]


def scripted_losses(monkeypatch, trainer: Trainer, loss_at_step: dict[int, float]) -> None:
    """Validation reports ``loss_at_step[global_step]`` as its loss (the rest is real)."""
    real_validate = trainer.validate

    def scripted(data):
        return {**real_validate(data), "val/loss": loss_at_step[trainer.state.global_step]}

    monkeypatch.setattr(trainer, "validate", scripted)


class WeightsAtValidation(Callback):
    def __init__(self):
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_validation_end(self, trainer, metrics):
        self.weights[trainer.state.global_step] = {key: value.clone() for key, value in trainer.task.state_dict().items()}


def same_weights(one: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> bool:
    return one.keys() == other.keys() and all(torch.equal(one[key], other[key]) for key in one)


def test_validation_runs_every_n_updates_and_at_each_epochs_end(loaders, tmp_path):
    train, valid = loaders  # 6 batches an epoch
    with Experiment(tmp_path, tensorboard=False) as experiment:
        results = make_trainer(experiment, validate_every_steps=4, max_epochs=2).fit(train, valid)
    # Step 12 is the last of epoch 2: validated once, as the epoch's validation.
    assert validated_at(results["history"]) == [(1, 4), (1, 6), (2, 8), (2, 12)]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    between = [(line["step"], line["epoch"]) for line in lines if line["split"] == "val"]
    assert between == [(4, 0), (8, 1)]  # logged at their step, inside the epoch (0-based, as every line)
    assert all("val/accuracy" in line for line in lines if line["split"] == "val")
    assert [line["step"] for line in lines if line["split"] == "epoch"] == [6, 12]


def test_the_best_model_may_come_from_a_validation_inside_an_epoch(loaders, tmp_path, monkeypatch):
    train, valid = loaders
    weights = WeightsAtValidation()
    with Experiment(tmp_path, tensorboard=False) as experiment:
        trainer = make_trainer(experiment, validate_every_steps=4, max_epochs=2, callbacks=[weights])
        scripted_losses(monkeypatch, trainer, {4: 0.5, 6: 0.4, 8: 0.2, 12: 0.3})
        results = trainer.fit(train, valid)
    assert (results["best_epoch"], results["best_step"], results["best_value"]) == (2, 8, 0.2)
    assert results["best_validation"]["val/loss"] == 0.2
    assert trainer.state.best_checkpoint == "step-000000008"  # saved when it was validated, mid-epoch
    _, metadata = load_checkpoint(tmp_path / "checkpoints" / "step-000000008")
    assert metadata["monitor_value"] == 0.2 and metadata["batch_in_epoch"] == 2
    assert find_best_checkpoint(tmp_path).name == "step-000000008"  # what cadence eval and cadence.load take
    assert same_weights(trainer.task.state_dict(), weights.weights[8])  # restore_best loaded step 8's weights


def test_the_best_model_without_a_folder_is_kept_in_memory_at_its_step(loaders, monkeypatch):
    train, valid = loaders
    weights = WeightsAtValidation()
    trainer = make_trainer(validate_every_steps=4, max_epochs=2, callbacks=[weights])
    scripted_losses(monkeypatch, trainer, {4: 0.5, 6: 0.4, 8: 0.2, 12: 0.3})
    trainer.fit(train, valid)
    assert same_weights(trainer.task.state_dict(), weights.weights[8])


def test_early_stopping_counts_step_validations_and_stops_inside_an_epoch(loaders, monkeypatch):
    train, valid = loaders
    weights = WeightsAtValidation()
    trainer = make_trainer(validate_every_steps=2, max_epochs=5, callbacks=[weights, EarlyStopping(patience=2)])
    scripted_losses(monkeypatch, trainer, {2: 0.5, 4: 0.3, 6: 0.4, 8: 0.35, 10: 0.2})
    results = trainer.fit(train, valid)
    # Best at step 4; steps 6 and 8 do not improve: stopped at step 8, inside epoch 2.
    assert results["global_step"] == 8 and results["epochs_completed"] == 1
    assert (results["best_step"], results["best_value"]) == (4, 0.3)
    assert same_weights(trainer.task.state_dict(), weights.weights[4])


def shuffled(loader) -> DataLoader:
    """A new shuffling loader over the same data, drawing from the global generator (as the
    validation loader does each time it starts): each run its own."""
    return DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=True)


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, trainer, output):
        if trainer.state.global_step == self.step:
            trainer.experiment.stop()


def test_a_run_stopped_between_two_step_validations_resumes_exactly(loaders, tmp_path):
    train, valid = loaders
    options = dict(validate_every_steps=4, max_epochs=3)
    with Experiment(tmp_path / "whole", tensorboard=False) as experiment:
        whole = make_trainer(experiment, **options)
        expected = whole.fit(shuffled(train), valid)
    with Experiment(tmp_path / "stopped", tensorboard=False) as experiment:
        with pytest.raises(TrainingInterrupted):  # at step 10: validated at 8, next at 12
            make_trainer(experiment, callbacks=[StopAt(10)], **options).fit(shuffled(train), valid)
    with Experiment(tmp_path / "stopped", tensorboard=False) as experiment:
        resumed = make_trainer(experiment, **options)
        results = resumed.fit(shuffled(train), valid, resume_from=tmp_path / "stopped")
    assert validated_at(results["history"]) == [(1, 4), (1, 6), (2, 8), (2, 12), (3, 16), (3, 18)]
    assert results["history"] == expected["history"]  # every validation's figures, bit for bit
    assert same_weights(resumed.task.state_dict(), whole.task.state_dict())

    def figures(run: str) -> list[dict]:
        lines = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{key: value for key, value in line.items() if "time" not in key} for line in lines]  # clocks differ

    assert figures("stopped") == figures("whole")  # the same lines, none twice


class Unsized:
    """Batches without a length: the loop cannot tell the epoch's last batch before it ends."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)


def test_a_step_validation_on_an_unsized_epochs_last_batch_is_not_repeated_at_its_end(loaders):
    train, valid = loaders
    recorder = WeightsAtValidation()
    results = make_trainer(validate_every_steps=3, max_epochs=1, callbacks=[recorder]).fit(Unsized(train), valid)
    assert validated_at(results["history"]) == [(1, 3), (1, 6)]
    assert sorted(recorder.weights) == [3, 6]  # on_validation_end once a validation


def test_step_validation_needs_validation_data(loaders):
    train, _ = loaders
    with pytest.raises(ConfigError, match="trainer.validate_every_steps"):
        make_trainer(validate_every_steps=2).fit(train)
