"""Checkpoint policy and retention, stop requests (signals, Experiment.stop()), finding the
checkpoint to resume from, and rebuilding components from a checkpoint."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from cadence import Callback, ClassificationTask, Experiment, Trainer, TrainingInterrupted
from cadence.checkpoint.format import MANIFEST_FILE, TENSORS_FILE, load_checkpoint
from cadence.checkpoint.checkpointer import Checkpointer
from cadence.checkpoint.retention import CheckpointPolicy, checkpoints_to_delete
from cadence.checkpoint.checkpointer import find_best_checkpoint, find_checkpoint
from cadence.errors import CheckpointError
from cadence.metrics import Accuracy
from cadence.run_status import read_status


def make_trainer(experiment, policy=CheckpointPolicy(), callbacks=(), **options) -> Trainer:
    torch.manual_seed(0)
    task = ClassificationTask(nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2), nn.Linear(16, 3)))
    return Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), metrics=[Accuracy(num_classes=3)], progress_bar=False,
                   experiment=experiment, checkpoint_policy=policy, callbacks=list(callbacks), **options)


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in (directory / "checkpoints").iterdir())


def test_retention_keeps_the_newest_and_the_best_and_never_the_rest():
    policy = CheckpointPolicy(keep_last=2, keep_best=2)
    entries = [("a", 1, 0.5), ("b", 2, 0.2), ("c", 3, 0.9), ("d", 4, 0.4), ("e", 5, None), ("f", 6, None)]
    assert checkpoints_to_delete(entries, policy, "min", protected=set()) == ["a", "c"]
    assert checkpoints_to_delete(entries, policy, "max", protected={"b"}) == ["d"]


def test_time_and_step_triggers():
    by_time = CheckpointPolicy(every_epochs=None, every_minutes=1.0)
    assert by_time.is_due_after_step(7, seconds_since_save=61.0) and not by_time.is_due_after_step(7, seconds_since_save=30.0)
    assert not by_time.is_due_after_epoch(1)
    assert CheckpointPolicy(every_steps=5).is_due_after_step(10, 0.0) and not CheckpointPolicy(every_steps=5).is_due_after_step(11, 0.0)


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="every_steps must be positive"):
        CheckpointPolicy(every_steps=0)
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        CheckpointPolicy(keep_last=0)


def test_step_checkpoints_with_retention_keep_the_best(tmp_path, loaders):
    train, valid = loaders  # 6 batches an epoch
    with Experiment(tmp_path, tensorboard=False) as experiment:
        trainer = make_trainer(experiment, CheckpointPolicy(every_steps=2, every_epochs=None, keep_last=2, keep_best=1), max_epochs=3)
        trainer.fit(train, valid)
    kept = names(tmp_path)
    assert trainer.state.best_checkpoint in kept
    assert kept[-2:] == ["step-000000016", "step-000000018"]  # the two newest
    assert len(kept) <= 3


class SignalAt(Callback):
    def __init__(self, step: int, signal_number: int):
        self.step, self.signal_number = step, signal_number

    def on_batch_end(self, trainer, output):
        if trainer.state.global_step == self.step:
            os.kill(os.getpid(), self.signal_number)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_stops_cleanly(tmp_path, loaders, signal_number):
    train, valid = loaders
    previous = signal.getsignal(signal_number)
    with Experiment(tmp_path, tensorboard=False) as experiment:
        trainer = make_trainer(experiment, callbacks=[SignalAt(4, signal_number)], max_epochs=3)
        with pytest.raises(TrainingInterrupted, match=rf"stopped by {signal.Signals(signal_number).name} at step 4.*cadence resume") as stopped:
            trainer.fit(train, valid)
    assert stopped.value.signal_number == signal_number
    assert names(tmp_path) == ["step-000000004"]
    _, metadata = load_checkpoint(tmp_path / "checkpoints" / "step-000000004")
    assert metadata["batch_in_epoch"] == 4
    assert signal.getsignal(signal_number) is previous  # handlers are given back after fit
    status = read_status(tmp_path)  # cadence ls: stopped, with where to resume (not crashed, though caught here)
    assert status["status"] == "stopped" and "cadence resume" in status["note"]


class StopExperimentAt(Callback):
    def on_batch_end(self, trainer, output):
        if trainer.state.global_step == 3:
            trainer.experiment.stop()


def test_experiment_stop_during_fit_saves_then_closes(tmp_path, loaders):
    train, valid = loaders
    experiment = Experiment(tmp_path, tensorboard=False)
    trainer = make_trainer(experiment, callbacks=[StopExperimentAt()], max_epochs=3)
    with pytest.raises(TrainingInterrupted, match="stopped by Experiment.stop"):
        trainer.fit(train, valid)
    assert names(tmp_path) == ["step-000000003"] and not experiment.stopped
    experiment.stop()
    assert experiment.stopped


def test_a_damaged_newest_checkpoint_is_skipped_and_all_damaged_is_an_error(tmp_path, loaders, caplog):
    train, valid = loaders
    with Experiment(tmp_path, tensorboard=False) as experiment:
        make_trainer(experiment, CheckpointPolicy(every_epochs=1, keep_last=3), max_epochs=3).fit(train, valid)
    newest, older = tmp_path / "checkpoints" / "step-000000018", tmp_path / "checkpoints" / "step-000000012"
    data = bytearray((newest / TENSORS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    (newest / TENSORS_FILE).write_bytes(bytes(data))
    assert find_checkpoint(tmp_path) == older
    assert "step-000000018" in caplog.text
    for path in (tmp_path / "checkpoints").iterdir():
        (path / MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match="no valid checkpoint to resume from"):
        find_checkpoint(tmp_path)


def test_resume_from_a_damaged_newest_checkpoint_continues_from_the_one_before(tmp_path, loaders):
    train, valid = loaders
    with Experiment(tmp_path, tensorboard=False) as experiment:
        make_trainer(experiment, CheckpointPolicy(keep_last=3), max_epochs=2).fit(train, valid)
    (tmp_path / "checkpoints" / "step-000000012" / TENSORS_FILE).write_bytes(b"truncated")
    with Experiment(tmp_path, tensorboard=False) as experiment:
        resumed = make_trainer(experiment, max_epochs=3)
        resumed.fit(train, valid, resume_from=tmp_path)
    # Epoch 2 is trained again from the checkpoint after epoch 1; nothing starts from scratch.
    assert [entry["epoch"] for entry in resumed.state.history] == [1, 2, 3] and resumed.state.global_step == 18


class WouldCreateAFile:
    """Unpickling this creates ``path``: what a malicious checkpoint would carry."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def rewrite_with_valid_hashes(folder: Path, name: str, data: bytes) -> None:
    """Replace a file and fix the manifest, as an attacker would."""
    import hashlib
    import json

    (folder / name).write_bytes(data)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_a_checkpoint_carrying_a_pickle_is_refused_and_never_run(tmp_path, loaders):
    import pickle

    train, valid = loaders
    with Experiment(tmp_path, tensorboard=False) as experiment:
        make_trainer(experiment, max_epochs=1).fit(train, valid)
    folder = tmp_path / "checkpoints" / "step-000000006"
    marker = tmp_path / "created-by-unpickling"
    rewrite_with_valid_hashes(folder, TENSORS_FILE, pickle.dumps({"task": WouldCreateAFile(marker)}))
    with Experiment(tmp_path, tensorboard=False) as experiment:
        with pytest.raises(CheckpointError, match=str(folder)):
            make_trainer(experiment, max_epochs=2).fit(train, valid, resume_from=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated file", "flipped byte", "missing file", "missing manifest"])
def test_every_kind_of_damage_falls_back_to_the_previous_checkpoint(tmp_path, loaders, damage, caplog):
    train, valid = loaders
    with Experiment(tmp_path, tensorboard=False) as experiment:
        make_trainer(experiment, CheckpointPolicy(keep_last=2), max_epochs=2).fit(train, valid)
    newest = tmp_path / "checkpoints" / "step-000000012"
    tensors = newest / TENSORS_FILE
    if damage == "truncated file":
        tensors.write_bytes(tensors.read_bytes()[:-10])
    elif damage == "flipped byte":
        data = bytearray(tensors.read_bytes())
        data[-1] ^= 0x01
        tensors.write_bytes(bytes(data))
    elif damage == "missing file":
        tensors.unlink()
    else:
        (newest / MANIFEST_FILE).unlink()
    assert find_checkpoint(tmp_path).name == "step-000000006"
    assert "skipping damaged checkpoint" in caplog.text and "step-000000012" in caplog.text


class StopAtEpochEnd(Callback):
    def on_epoch_end(self, trainer):
        if trainer.state.epoch == 2:
            trainer.state.should_stop = True


def test_a_run_stopped_by_a_callback_stays_stopped_when_resumed(tmp_path, loaders):
    train, valid = loaders
    with Experiment(tmp_path, tensorboard=False) as experiment:
        make_trainer(experiment, callbacks=[StopAtEpochEnd()], max_epochs=6).fit(train, valid)
    with Experiment(tmp_path, tensorboard=False) as experiment:
        again = make_trainer(experiment, callbacks=[StopAtEpochEnd()], max_epochs=6)
        again.fit(train, valid, resume_from=tmp_path)
    assert again.state.global_step == 12 and again.state.epoch == 2


def test_max_steps_on_an_epochs_last_batch_still_validates_that_epoch(loaders):
    train, valid = loaders  # 6 batches an epoch
    trainer = make_trainer(None, max_epochs=3, max_steps=12)
    trainer.fit(train, valid)
    assert [entry["epoch"] for entry in trainer.state.history] == [1, 2] and trainer.state.epoch == 2


def test_a_plain_shuffled_dataloader_resumes_mid_epoch_exactly(tmp_path):
    from torch.utils.data import DataLoader

    from tests.conftest import separable_data

    def run(directory, max_steps, resume):
        torch.manual_seed(0)
        loader = DataLoader(separable_data(), batch_size=16, shuffle=True)  # shuffled by the global RNG
        with Experiment(directory, tensorboard=False) as experiment:
            trainer = make_trainer(experiment, max_epochs=3, max_steps=max_steps)
            trainer.fit(loader, resume_from=directory if resume else None)
        return trainer.task.state_dict()

    straight = run(tmp_path / "straight", 15, resume=False)
    run(tmp_path / "cut", 8, resume=False)
    resumed = run(tmp_path / "cut", 15, resume=True)
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def test_a_stop_request_is_for_one_fit_only(tmp_path, loaders):
    train, valid = loaders
    with Experiment(tmp_path, tensorboard=False) as experiment:
        trainer = make_trainer(experiment, callbacks=[SignalAt(4, signal.SIGTERM)], max_epochs=2)
        with pytest.raises(TrainingInterrupted):
            trainer.fit(train, valid)
        trainer.callbacks = []
        trainer.fit(train, valid, resume_from=tmp_path)  # a second fit is not stopped by the old request
    assert trainer.state.epoch == 2 and trainer.state.global_step == 12


class SignalDuringValidation(Callback):
    def on_validation_end(self, trainer, metrics):
        if trainer.state.epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_epoch_start(self, trainer):
        self.epochs_started = getattr(self, "epochs_started", 0) + 1


def test_a_signal_during_validation_stops_at_the_epoch_boundary(tmp_path, loaders):
    train, valid = loaders
    callback = SignalDuringValidation()
    with Experiment(tmp_path, tensorboard=False) as experiment:
        with pytest.raises(TrainingInterrupted, match="at step 6"):
            make_trainer(experiment, callbacks=[callback], max_epochs=3).fit(train, valid)
    assert callback.epochs_started == 1 and names(tmp_path) == ["step-000000006"]


def test_resuming_from_an_older_checkpoint_sets_the_newer_ones_aside(tmp_path, loaders):
    train, valid = loaders
    with Experiment(tmp_path, tensorboard=False) as experiment:
        make_trainer(experiment, CheckpointPolicy(keep_last=3, keep_best=0), max_epochs=3, restore_best=False).fit(train, valid)
    with Experiment(tmp_path, tensorboard=False) as experiment:
        trainer = make_trainer(experiment, CheckpointPolicy(keep_last=3, keep_best=0), max_epochs=2, restore_best=False)
        trainer.fit(train, valid, resume_from=tmp_path / "checkpoints" / "step-000000006")
    assert names(tmp_path) == [".abandoned", "step-000000006", "step-000000012"]
    assert sorted(path.name.rsplit("-", 1)[0] for path in (tmp_path / "checkpoints" / ".abandoned").iterdir()) == [
        "step-000000012", "step-000000018"]


class WorkersStoppedBySignal:
    """Batches, until a SIGTERM sent to the whole process group arrives while the next batch
    is loading: the main process gets the signal, and the DataLoader raises because the same
    signal killed its workers."""

    def __init__(self, batches, signal_at: int):
        self.batches, self.signal_at = batches, signal_at

    def __iter__(self):
        for index, batch in enumerate(self.batches):
            if index == self.signal_at:
                os.kill(os.getpid(), signal.SIGTERM)
                raise RuntimeError("DataLoader worker (pid 12345) is killed by signal: Terminated.")
            yield batch

    def __len__(self):
        return len(self.batches)


def test_a_sigterm_that_also_killed_the_loader_workers_still_saves_and_stops(tmp_path, loaders):
    train, _ = loaders
    data = WorkersStoppedBySignal([batch for batch in train], signal_at=3)
    with Experiment(tmp_path, tensorboard=False) as experiment:
        with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at step 3"):
            make_trainer(experiment, max_epochs=2).fit(data)
    assert names(tmp_path) == ["step-000000003"]
    _, metadata = load_checkpoint(tmp_path / "checkpoints" / "step-000000003")
    assert metadata["batch_in_epoch"] == 3  # the batch that failed to load was not trained


def test_a_loading_error_without_a_stop_request_is_raised(loaders):
    train, _ = loaders

    class Broken:
        def __iter__(self):
            yield next(iter(train))
            raise RuntimeError("a real loading bug")

    with pytest.raises(RuntimeError, match="a real loading bug"):
        make_trainer(None, max_epochs=1).fit(Broken())


@pytest.mark.parametrize("mode", ["min", "max"])
def test_find_best_checkpoint_takes_the_best_monitored_value_earliest_on_ties(tmp_path, mode, caplog):
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    values = {"step-000000001": 0.5, "step-000000002": 0.2, "step-000000003": 0.2, "step-000000004": 0.9, "step-000000005": None}
    for step, (name, value) in enumerate(values.items(), start=1):
        checkpointer.save(name, {"weights": torch.zeros(1)}, {"global_step": step, "monitor_value": value, "mode": mode})
    best = "step-000000002" if mode == "min" else "step-000000004"
    assert find_best_checkpoint(tmp_path).name == best
    (tmp_path / "checkpoints" / best / TENSORS_FILE).write_bytes(b"damaged")
    # A damaged best is skipped for the next best (min: the tie at step 3; max: 0.5 at step 1).
    assert find_best_checkpoint(tmp_path).name == ("step-000000003" if mode == "min" else "step-000000001")
    assert "skipping damaged checkpoint" in caplog.text
    assert find_best_checkpoint(tmp_path / "checkpoints" / "step-000000005").name == "step-000000005"


def test_a_damaged_checkpoint_that_a_resumed_run_saves_over_is_set_aside_with_a_warning(tmp_path, loaders, caplog):
    train, valid = loaders
    with Experiment(tmp_path, tensorboard=False) as experiment:
        make_trainer(experiment, CheckpointPolicy(keep_last=3, keep_best=0), max_epochs=2, restore_best=False).fit(train, valid)
    damaged = tmp_path / "checkpoints" / "step-000000012"
    (damaged / MANIFEST_FILE).unlink()  # a save that never finished: the resume skips it, then saves step 12 again
    with Experiment(tmp_path, tensorboard=False) as experiment, caplog.at_level(logging.WARNING, logger="cadence"):
        make_trainer(experiment, CheckpointPolicy(keep_last=3, keep_best=0), max_epochs=2, restore_best=False).fit(
            train, valid, resume_from=tmp_path)
    assert names(tmp_path) == [".abandoned", "step-000000006", "step-000000012"]
    [kept] = list((tmp_path / "checkpoints" / ".abandoned").iterdir())
    assert kept.name.startswith("step-000000012-") and (kept / TENSORS_FILE).is_file()  # the damaged files, not deleted
    assert any("set aside step-000000012" in record.getMessage() and "damaged" in record.getMessage()
               for record in caplog.records)
    load_checkpoint(damaged)  # the new save is complete


def test_a_valid_checkpoint_saved_again_under_its_name_is_simply_replaced(tmp_path):
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save("last", {"w": torch.zeros(1)}, {"global_step": 1})
    checkpointer.save("last", {"w": torch.ones(1)}, {"global_step": 2})
    assert [path.name for path in tmp_path.iterdir()] == ["last"]
    assert torch.equal(checkpointer.load("last")[0]["w"], torch.ones(1))


def test_each_damaged_checkpoint_is_warned_about_once_when_finding_the_best(tmp_path, caplog):
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    for step, value in enumerate((0.5, 0.2, 0.1), start=1):  # the newest is also the best
        checkpointer.save(f"step-00000000{step}", {"w": torch.zeros(1)}, {"global_step": step, "monitor_value": value, "mode": "min"})
    (tmp_path / "checkpoints" / "step-000000003" / TENSORS_FILE).write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING, logger="cadence"):
        assert find_best_checkpoint(tmp_path).name == "step-000000002"
    warnings = [record.getMessage() for record in caplog.records if "step-000000003" in record.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].count("step-000000003") == 1  # "skipping damaged checkpoint PATH: problem", the path said once


@pytest.mark.parametrize(("monitor", "mode", "best_epoch"), [
    (["val/accuracy", "val/loss"], ["max", "min"], 2),  # equal accuracy every epoch: the lowest loss decides
    ("val/accuracy", "max", 1),                          # no tie-breaker: the earliest of the equals stays
])
def test_a_tie_breaker_picks_the_best_among_equal_validations(tmp_path, loaders, monkeypatch, monitor, mode, best_epoch):
    train, valid = loaders  # 6 batches an epoch
    losses = [0.5, 0.3, 0.4]
    with Experiment(tmp_path, tensorboard=False) as experiment:
        trainer = make_trainer(experiment, CheckpointPolicy(keep_last=1, keep_best=1), max_epochs=3, monitor=monitor, mode=mode)
        real_validate = trainer.validate

        def scripted(data):
            metrics = real_validate(data)
            metrics.update({"val/accuracy": 1.0, "val/loss": losses[trainer.state.epoch]})  # a small set scored perfectly
            return metrics

        monkeypatch.setattr(trainer, "validate", scripted)
        results = trainer.fit(train, valid)
    assert results["best_epoch"] == best_epoch and trainer.state.best_checkpoint == f"step-{6 * best_epoch:09d}"
    assert names(tmp_path) == sorted({f"step-{6 * best_epoch:09d}", "step-000000018"})
    # What cadence eval and cadence.load take as the run's best agrees with the trainer.
    assert find_best_checkpoint(tmp_path).name == f"step-{6 * best_epoch:09d}"
