from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cadence import Callback, ClassificationTask, EarlyStopping, Trainer
from cadence.callbacks import HOOKS
from cadence.metrics import Accuracy


class Recorder(Callback):
    """Records every hook call, to check the loop's order."""

    def __init__(self):
        self.calls: list[str] = []

    def __getattribute__(self, name):
        if name in HOOKS:
            calls = object.__getattribute__(self, "calls")
            return lambda trainer, *arguments: calls.append(name)
        return object.__getattribute__(self, name)


def make_trainer(**options) -> Trainer:
    torch.manual_seed(0)
    task = ClassificationTask(nn.Linear(6, 3))
    optimizer = torch.optim.SGD(task.parameters(), lr=options.pop("lr", 0.1))
    options.setdefault("metrics", [Accuracy(num_classes=3)])
    options.setdefault("progress_bar", False)
    return Trainer(task, optimizer, **options)


def test_hook_order(loaders):
    train, valid = loaders
    recorder = Recorder()
    train_small = [batch for batch, _ in zip(train, range(2))]
    make_trainer(max_epochs=2, callbacks=[recorder]).fit(train_small, valid)
    batch = ["on_batch_start", "on_after_backward", "on_batch_end"]
    epoch = ["on_epoch_start", *batch, *batch, "on_validation_end", "on_epoch_end"]
    assert recorder.calls == ["on_fit_start", *epoch, *epoch, "on_fit_end"]


def test_exception_reaches_on_exception_and_propagates(loaders):
    train, _ = loaders
    recorder = Recorder()

    class Boom(Callback):
        def on_batch_end(self, trainer, output):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        make_trainer(callbacks=[recorder, Boom()]).fit(train)
    assert recorder.calls[-1] == "on_exception"


def test_training_learns_and_reports_validation_history(loaders):
    train, valid = loaders
    results = make_trainer(max_epochs=5, monitor="val/accuracy", mode="max").fit(train, valid, test_data=valid)
    assert len(results["history"]) == 5
    assert results["best_validation"]["val/accuracy"] > 0.9
    assert results["test"]["test/accuracy"] == results["best_validation"]["val/accuracy"]
    assert [entry["epoch"] for entry in results["history"]] == [1, 2, 3, 4, 5]


class ScriptedValidation(Callback):
    """Overwrites the monitored value with a script, and records the weights per epoch."""

    def __init__(self, values):
        self.values = list(values)
        self.weights = []

    def on_validation_end(self, trainer, metrics):
        self.weights.append(trainer.task.model.weight.detach().clone())


def test_early_stopping_stops_and_restores_best_model(loaders, monkeypatch):
    train, valid = loaders
    scripted = [0.5, 0.3, 0.4, 0.45, 0.35, 0.2]  # best at epoch 2, then no improvement for 3
    recorder = ScriptedValidation(scripted)
    trainer = make_trainer(max_epochs=10, callbacks=[EarlyStopping(patience=3)])
    real_validate = trainer.validate

    def fake_validate(data):
        metrics = real_validate(data)
        metrics["val/loss"] = scripted[trainer.state.epoch]
        return metrics

    # The recorder runs after track_best; the order of callbacks matches the list.
    trainer.callbacks.insert(0, recorder)
    monkeypatch.setattr(trainer, "validate", fake_validate)
    results = trainer.fit(train, valid)
    assert results["epochs_completed"] == 5  # 2 (best) + patience 3
    assert results["best_epoch"] == 2 and results["best_value"] == 0.3
    assert torch.equal(trainer.task.model.weight, recorder.weights[1])
    assert not torch.equal(trainer.task.model.weight, recorder.weights[-1])


def test_gradient_clipping_by_norm_and_value(loaders):
    train, _ = loaders
    trainer = make_trainer(max_epochs=1, clip_grad_value=1e-3, lr=1.0)
    before = trainer.task.model.weight.detach().clone()
    trainer.fit([next(iter(train))])
    # One SGD step with lr 1 moves each weight by at most the clip value.
    assert (trainer.task.model.weight.detach() - before).abs().max().item() <= 1e-3 + 1e-7

    trainer = make_trainer(max_epochs=1, clip_grad_norm=1e-2, lr=1.0)
    before = [p.detach().clone() for p in trainer.task.parameters()]
    trainer.fit([next(iter(train))])
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(trainer.task.parameters(), before)])
    assert step.norm().item() <= 1e-2 * (1 + 1e-5)


def test_scheduler_per_step_and_per_epoch(loaders):
    train, valid = loaders  # 6 batches an epoch
    trainer = make_trainer(max_epochs=2, lr=1.0)
    trainer.scheduler = torch.optim.lr_scheduler.ExponentialLR(trainer.optimizer, gamma=0.5)
    trainer.fit(train, valid)
    assert math.isclose(trainer.optimizer.param_groups[0]["lr"], 0.25)

    trainer = make_trainer(max_epochs=2, lr=1.0, scheduler_interval="step")
    trainer.scheduler = torch.optim.lr_scheduler.ExponentialLR(trainer.optimizer, gamma=0.5)
    trainer.fit(train, valid)
    assert math.isclose(trainer.optimizer.param_groups[0]["lr"], 0.5**12)


def test_reduce_on_plateau_follows_monitor(loaders, monkeypatch):
    train, valid = loaders
    trainer = make_trainer(max_epochs=4, lr=1.0, monitor="val/accuracy", mode="max")
    trainer.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(trainer.optimizer, mode="max", patience=0, factor=0.1)
    scripted = [0.5, 0.6, 0.6, 0.6]  # improves once (epoch 2), then stalls: the rate falls after epochs 3 and 4
    rates = []
    real_validate = trainer.validate

    def fake_validate(data):
        metrics = real_validate(data)
        metrics["val/accuracy"] = scripted[trainer.state.epoch]
        rates.append(trainer.optimizer.param_groups[0]["lr"])  # the rate the epoch trained with
        return metrics

    monkeypatch.setattr(trainer, "validate", fake_validate)
    trainer.fit(train, valid)
    # Never stepped: 1.0 throughout; stepped on another value or in "min" mode: it falls after epoch 2.
    assert rates == [1.0, 1.0, 1.0, pytest.approx(0.1)]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_max_steps_stops_mid_epoch(loaders):
    train, _ = loaders
    trainer = make_trainer(max_epochs=5, max_steps=4)
    trainer.fit(train)
    # The epoch was not finished: no validation, and a resume continues at its 5th batch.
    assert trainer.state.global_step == 4 and trainer.state.epoch == 0 and trainer.train_loader.cursor == 4


def test_unknown_monitor_is_refused_before_training():
    from cadence.callbacks import EarlyStopping
    from cadence.errors import ConfigError

    # Refused when the Trainer is made, with the keys the run's metrics will give.
    with pytest.raises(ConfigError, match=r"trainer.monitor: 'val/acc' is never among the validation results \(did you mean 'val/accuracy'\?\)"):
        make_trainer(monitor="val/acc")
    with pytest.raises(ConfigError, match="callbacks.0.monitor: 'ten'"):
        make_trainer(callbacks=[EarlyStopping(monitor="ten")])
    # Named losses are the task's, known once it runs: accepted.
    assert make_trainer(monitor="val/loss_ctc").monitor == "val/loss_ctc"

    class UsersMetric(Accuracy):  # a metric of the user's may give its keys only once it has data
        pass

    UsersMetric.__module__ = "my_lab.metrics"
    assert make_trainer(metrics=[UsersMetric(num_classes=3)], monitor="val/macro_f1").monitor == "val/macro_f1"


def test_a_metric_value_missing_at_validation_is_a_clear_error(loaders):
    from cadence.errors import ConfigError

    train, valid = loaders
    with pytest.raises(ConfigError, match="monitor 'val/loss_ctc' is not among the validation results"):
        make_trainer(monitor="val/loss_ctc").fit(train, valid)


def test_a_non_finite_loss_stops_the_run_before_anything_is_saved(tmp_path, loaders):
    from cadence.errors import NonFiniteLoss
    from cadence.experiment import Experiment

    train, valid = loaders
    experiment = Experiment(tmp_path / "run", tensorboard=False)
    trainer = make_trainer(max_epochs=3, experiment=experiment)
    trainer.fit(train, valid)  # a good first fit: checkpoints of finite weights
    saved = sorted(path.name for path in experiment.checkpoints_directory.iterdir())
    with torch.no_grad():
        next(trainer.task.parameters()).fill_(float("nan"))  # diverged
    trainer.max_epochs = 6
    with pytest.raises(NonFiniteLoss, match="NaN or infinite at step 19: the model diverged; nothing was saved after step 18"):
        trainer.fit(train, valid)
    experiment.stop()
    assert sorted(path.name for path in experiment.checkpoints_directory.iterdir()) == saved


def test_batches_of_any_nesting_reach_the_device():
    from dataclasses import dataclass

    from cadence.runtime.device import move_to_device

    @dataclass
    class Pair:
        inputs: torch.Tensor
        meta: dict

    moved = move_to_device({"pair": Pair(torch.zeros(2), {"x": (torch.ones(1), "id")})}, torch.device("cpu"))
    assert isinstance(moved["pair"], Pair) and moved["pair"].meta["x"][1] == "id"


class EpochAwareData:
    """Training data with a per-epoch plan, like cadence's AudioDataLoader."""

    def __init__(self, batches):
        self.batches, self.epochs_set = batches, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs_set.append(epoch)

    def __iter__(self):
        return iter(self.batches)

    def state_dict(self) -> dict:
        return {"epochs_set": list(self.epochs_set)}


def test_the_epoch_plan_follows_the_train_state_and_is_checkpointed(loaders):
    train, _ = loaders
    data = EpochAwareData([batch for batch, _ in zip(train, range(2))])
    trainer = make_trainer(max_epochs=3)
    trainer.fit(data)
    assert data.epochs_set == [0, 1, 2]
    assert trainer.state_dict()["train_data"]["data"] == {"epochs_set": [0, 1, 2]}


def test_classification_refuses_token_sequence_targets():
    from cadence.data.dataset import Batch
    from cadence.errors import ConfigError

    task = ClassificationTask(nn.Linear(6, 3))
    batch = Batch(torch.zeros(2, 6), torch.tensor([6, 6]), torch.zeros(2, 4, dtype=torch.int64), torch.tensor([4, 2]), ["a", "b"], ["", ""])
    with pytest.raises(ConfigError, match="one label per utterance.*target: label"):
        task.training_step(batch)


class PlannedBatches:
    """A loader that owns its position as AudioDataLoader does: (epoch, cursor), and a
    complete pass moves it to the next epoch."""

    def __init__(self, batches):
        self.batches, self.epoch, self.cursor = batches, 0, 0

    def set_epoch(self, epoch):
        if epoch != self.epoch:
            self.epoch, self.cursor = epoch, 0

    def batches_left(self):
        return len(self.batches) - self.cursor

    def __iter__(self):
        while self.cursor < len(self.batches):
            self.cursor += 1
            yield self.batches[self.cursor - 1]
        self.epoch, self.cursor = self.epoch + 1, 0

    def state_dict(self):
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state):
        self.epoch, self.cursor = state["epoch"], state["cursor"]


class StopRequestOnLastBatch(Callback):
    """A SIGTERM (or Experiment.stop()) arriving while the epoch's last batch trains."""

    def on_batch_end(self, trainer, output):
        if trainer.train_loader.batches_left() == 0:
            trainer.stop_requests.request("SIGTERM")


def test_a_stop_request_on_the_last_batch_of_a_self_positioned_loader_finishes_the_epoch(loaders, tmp_path):
    from cadence import Experiment, TrainingInterrupted

    train, valid = loaders
    batches = [batch for batch, _ in zip(train, range(3))]
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        trainer = make_trainer(max_epochs=3, callbacks=[StopRequestOnLastBatch()], experiment=experiment)
        with pytest.raises(TrainingInterrupted):
            trainer.fit(PlannedBatches(batches), valid)
    # The epoch was validated and counted: a resume starts the next one instead of training it again.
    assert [entry["epoch"] for entry in trainer.state.history] == [1] and trainer.state.epoch == 1
    resumed = make_trainer(max_epochs=2)
    resumed.fit(PlannedBatches(batches), valid, resume_from=tmp_path / "run")
    assert resumed.state.global_step == 6 and [entry["epoch"] for entry in resumed.state.history] == [1, 2]


def shuffled(loader):
    """A new shuffling DataLoader over the same data, drawing from the global RNG (each run its own)."""
    from torch.utils.data import DataLoader

    return DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=True)


def same_weights(one: Trainer, other: Trainer) -> bool:
    return all(torch.equal(a, b) for a, b in zip(one.task.state_dict().values(), other.task.state_dict().values()))


def test_a_second_fit_continues_the_epoch_the_first_stopped_inside(loaders):
    straight = make_trainer(max_epochs=2)
    straight.fit(shuffled(loaders[0]))
    twice = make_trainer(max_epochs=2, max_steps=5)
    train = shuffled(loaders[0])
    twice.fit(train)
    twice.max_steps = None
    twice.fit(train)
    assert twice.state.global_step == straight.state.global_step and same_weights(twice, straight)


def test_a_checkpoint_from_before_the_loader_owned_the_position_resumes_exactly(loaders, tmp_path):
    from cadence import Experiment
    from cadence.checkpoint.format import load_checkpoint, save_checkpoint

    straight = make_trainer(max_epochs=2)
    straight.fit(shuffled(loaders[0]))
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        make_trainer(max_epochs=2, max_steps=5, experiment=experiment).fit(shuffled(loaders[0]))
    (checkpoint,) = (tmp_path / "run" / "checkpoints").iterdir()
    state, metadata = load_checkpoint(checkpoint)
    # The old layout: the position in TrainState, the epoch's start RNG beside it, no loader state.
    state["trainer_state"]["batch_in_epoch"] = state["train_data"]["cursor"]
    state["epoch_start_rng"] = state["train_data"]["epoch_start_rng"]
    state["train_data"] = None
    save_checkpoint(checkpoint, state, metadata)
    resumed = make_trainer(max_epochs=2)
    resumed.fit(shuffled(loaders[0]), resume_from=checkpoint)
    assert resumed.state.global_step == straight.state.global_step and same_weights(resumed, straight)


class Overridden(Trainer):
    """A Trainer changed at its documented override points (no callback), each one recording its calls."""

    def __init__(self, *arguments, freeze: bool = False, **options):
        super().__init__(*arguments, **options)
        self.freeze = freeze
        self.calls = {"training_step": 0, "clip_gradients": 0, "optimizer_step": 0, "evaluate_batch": 0}

    def training_step(self, batch):
        self.calls["training_step"] += 1
        return super().training_step(batch)

    def clip_gradients(self):
        self.calls["clip_gradients"] += 1
        if self.freeze:  # between backward and the update: nothing moves
            for parameter in self.task.parameters():
                parameter.grad.zero_()

    def optimizer_step(self):
        self.calls["optimizer_step"] += 1
        super().optimizer_step()

    def evaluate_batch(self, batch):
        self.calls["evaluate_batch"] += 1
        output = super().evaluate_batch(batch)
        output.predictions = torch.zeros_like(output.predictions)  # every example scored as class 0
        return output


def test_a_subclass_changes_the_loop_at_each_documented_override_point(loaders):
    train, valid = loaders  # 6 training batches an epoch, 2 validation batches
    torch.manual_seed(0)
    task = ClassificationTask(nn.Linear(6, 3))
    initial = {name: value.clone() for name, value in task.state_dict().items()}
    trainer = Overridden(task, torch.optim.SGD(task.parameters(), lr=0.1), freeze=True, max_epochs=2,
                         metrics=[Accuracy(num_classes=3)], progress_bar=False)
    results = trainer.fit(train, valid)
    assert trainer.calls == {"training_step": 12, "clip_gradients": 12, "optimizer_step": 12, "evaluate_batch": 2 * 2}
    assert all(torch.equal(value, initial[name]) for name, value in task.state_dict().items())  # clip_gradients' zeros were used
    share_of_class_0 = sum(int((labels == 0).sum()) for _, labels in valid) / len(valid.dataset)
    assert results["best_validation"]["val/accuracy"] == pytest.approx(share_of_class_0)  # evaluate_batch's predictions were scored
