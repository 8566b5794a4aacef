"""WeightNoise: the gradient is taken at noisy weights and applied to the clean ones; nothing
else (evaluation, state dicts, checkpoints) ever sees noise; the noise comes from torch's
global generator."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import cadence.config.components  # noqa: F401  (registers the built-ins)
from cadence import ClassificationTask, Trainer
from cadence.callbacks import Callback, WeightNoise
from cadence.checkpoint.checkpointer import load_checkpoint
from cadence.checkpoint.retention import CheckpointPolicy
from cadence.errors import ConfigError
from cadence.experiment import Experiment
from cadence.registry import CALLBACKS

LEARNING_RATE = 0.1


def batches(count: int, size: int = 8, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=generator), torch.randint(0, 3, (size,), generator=generator)) for _ in range(count)]


def weights(task: nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in task.named_parameters()}


class Recorder(Callback):
    """Copies the task's weights at the hooks (placed after WeightNoise: it sees what the forward sees)."""

    def __init__(self):
        self.at_batch_start: list[dict[str, torch.Tensor]] = []
        self.at_after_backward: list[dict[str, torch.Tensor]] = []
        self.at_batch_end: list[dict[str, torch.Tensor]] = []
        self.state_dicts_at_batch_end: list[dict[str, torch.Tensor]] = []

    def on_batch_start(self, trainer, batch):
        self.at_batch_start.append(weights(trainer.task))

    def on_after_backward(self, trainer):
        self.at_after_backward.append(weights(trainer.task))

    def on_batch_end(self, trainer, output):
        self.at_batch_end.append(weights(trainer.task))
        self.state_dicts_at_batch_end.append({name: value.clone() for name, value in trainer.task.state_dict().items()})


def make_trainer(*callbacks: Callback, seed: int = 0, **options) -> Trainer:
    torch.manual_seed(seed)
    task = ClassificationTask(nn.Linear(6, 3))
    optimizer = torch.optim.SGD(task.parameters(), lr=LEARNING_RATE)
    options = {"max_epochs": 1, "progress_bar": False, "log_every": 1, **options}
    return Trainer(task, optimizer, callbacks=list(callbacks), **options)


def gradient_at(point: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The gradient of the batch's mean cross-entropy for a linear model with the weights ``point``."""
    weight = point["model.weight"].clone().requires_grad_(True)
    bias = point["model.bias"].clone().requires_grad_(True)
    inputs, targets = batch
    F.cross_entropy(F.linear(inputs, weight, bias), targets).backward()
    return {"model.weight": weight.grad, "model.bias": bias.grad}


def test_the_step_is_taken_at_the_noisy_point_and_applied_to_the_clean_weights():
    data = batches(1)
    recorder = Recorder()
    trainer = make_trainer(WeightNoise(std=0.5), recorder)
    clean = weights(trainer.task)
    trainer.fit(data)
    noisy = recorder.at_batch_start[0]
    assert all((noisy[name] - clean[name]).abs().min() > 0 for name in clean)  # every weight got noise
    at_noisy, at_clean = gradient_at(noisy, data[0]), gradient_at(clean, data[0])
    for name, value in weights(trainer.task).items():
        expected = clean[name] - LEARNING_RATE * at_noisy[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
        assert not torch.allclose(value, clean[name] - LEARNING_RATE * at_clean[name], atol=1e-4)  # the noise counted
        assert not torch.allclose(value, noisy[name] - LEARNING_RATE * at_noisy[name], atol=1e-4)  # clean weights stepped
    assert recorder.at_after_backward[0].keys() == clean.keys()
    for name in clean:  # clipping and the optimizer see the exact clean values
        assert torch.equal(recorder.at_after_backward[0][name], clean[name])


def test_with_accumulation_each_batch_has_its_own_noise_on_the_clean_weights():
    data = batches(2)
    noise, recorder = WeightNoise(std=0.5), Recorder()
    trainer = make_trainer(noise, recorder, accumulate_batches=2)
    clean = weights(trainer.task)
    trainer.fit(data)
    assert trainer.state.global_step == 1
    first, second = recorder.at_batch_start
    assert all((first[name] - second[name]).abs().min() > 0 for name in clean)  # fresh noise per batch
    # Were the first batch's noise left on, the update would start from it, not from the clean weights.
    gradients = [gradient_at(point, batch) for point, batch in zip((first, second), data)]
    for name, value in weights(trainer.task).items():
        mean_gradient = (gradients[0][name] + gradients[1][name]) / 2  # equal batch sizes
        torch.testing.assert_close(value, clean[name] - LEARNING_RATE * mean_gradient, rtol=0, atol=1e-6)


def test_noise_comes_from_the_global_generator_and_repeats_under_a_seed():
    class Seed(Callback):  # before WeightNoise: the draws that follow are known
        def on_batch_start(self, trainer, batch):
            torch.manual_seed(1234)

    recorder = Recorder()
    trainer = make_trainer(Seed(), WeightNoise(std=0.25), recorder)
    clean = weights(trainer.task)
    trainer.fit(batches(1))
    torch.manual_seed(1234)
    for name, parameter in trainer.task.named_parameters():  # drawn in the task's parameter order
        expected = 0.25 * torch.randn(parameter.shape)
        torch.testing.assert_close(recorder.at_batch_start[0][name] - clean[name], expected, rtol=0, atol=1e-6)

    runs = []
    for seed in (0, 0, 1):
        recorder = Recorder()
        trainer = make_trainer(WeightNoise(std=0.25), recorder, seed=seed)
        trainer.fit(batches(3))
        runs.append((recorder.at_batch_start, weights(trainer.task)))
    for (noisy_a, final_a), (noisy_b, final_b) in [(runs[0], runs[1])]:
        for step in range(3):
            assert all(torch.equal(noisy_a[step][name], noisy_b[step][name]) for name in final_a)
        assert all(torch.equal(final_a[name], final_b[name]) for name in final_a)
    assert not torch.equal(runs[0][1]["model.weight"], runs[2][1]["model.weight"])


def test_weights_and_state_dict_are_clean_at_every_batch_end_and_in_checkpoints(tmp_path):
    data = batches(4)
    noise, recorder = WeightNoise(std=0.5), Recorder()
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        trainer = make_trainer(noise, recorder, accumulate_batches=2, experiment=experiment,
                               checkpoint_policy=CheckpointPolicy(every_steps=1, keep_last=10))
        clean = weights(trainer.task)
        trainer.fit(data)
    # The clean weights of each update, rebuilt: each batch's gradient at its own noisy point.
    for step in range(2):
        window = range(2 * step, 2 * step + 2)
        gradients = [gradient_at(recorder.at_batch_start[index], data[index]) for index in window]
        clean = {name: clean[name] - LEARNING_RATE * (gradients[0][name] + gradients[1][name]) / 2 for name in clean}
        for name in clean:
            # The parameters themselves (a state_dict() would put clean values back by itself).
            torch.testing.assert_close(recorder.at_batch_end[step][name], clean[name], rtol=0, atol=1e-6)
            assert torch.equal(recorder.state_dicts_at_batch_end[step][name], recorder.at_batch_end[step][name])
        state, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / f"step-{step + 1:09d}")
        for name in clean:
            assert torch.equal(state["task"][name], recorder.at_batch_end[step][name])
    assert not noise.is_noisy


def evaluated_loss(task: ClassificationTask, data) -> float:
    task.eval()
    with torch.no_grad():
        losses = [task.validation_step(batch).loss * len(batch[1]) for batch in data]
    return (torch.stack(losses).sum() / sum(len(batch[1]) for batch in data)).item()


def test_evaluation_never_sees_noise():
    train, valid = batches(3), batches(2, seed=1)
    trainer = make_trainer(WeightNoise(std=1.0))
    results = trainer.fit(train, valid)
    assert results["history"][0]["val/loss"] == pytest.approx(evaluated_loss(trainer.task, valid), rel=1e-6)


def test_evaluation_after_a_skipped_last_batch_sees_clean_weights():
    # The last batch's loss is NaN: no backward, so no on_after_backward takes its noise off.
    train, valid = batches(3), batches(2, seed=1)
    train[-1][0][0, 0] = float("nan")
    recorder = Recorder()
    trainer = make_trainer(WeightNoise(std=1.0), recorder, on_nonfinite="skip")
    results = trainer.fit(train, valid)
    assert trainer.state.skipped_batches == 1 and trainer.state.global_step == 2
    for name, value in weights(trainer.task).items():
        assert torch.equal(value, recorder.at_batch_end[-1][name])  # the weights of the last update
    assert results["history"][0]["val/loss"] == pytest.approx(evaluated_loss(trainer.task, valid), rel=1e-6)


def test_the_guards_put_clean_weights_back_and_are_removed_after_fit():
    trainer = make_trainer()
    noise = WeightNoise(std=1.0)
    noise.on_fit_start(trainer)
    clean, features = weights(trainer.task), torch.randn(4, 6)
    expected = trainer.task.model(features)
    noise.add_noise(1.0)
    assert not torch.equal(trainer.task.model.weight, clean["model.weight"])
    assert not torch.equal(trainer.task.model(features), expected)  # training mode: the forward is noisy
    trainer.task.eval()
    assert torch.equal(trainer.task.model(features), expected)  # evaluation mode: clean first
    assert not noise.is_noisy
    noise.add_noise(1.0)
    assert all(torch.equal(value, clean[name]) for name, value in trainer.task.state_dict().items())
    assert not noise.is_noisy
    noise.on_fit_end(trainer)
    noise.add_noise(1.0)
    assert not torch.equal(trainer.task.state_dict()["model.weight"], clean["model.weight"])  # guards gone
    noise.restore()


def test_only_the_chosen_weights_get_noise_and_only_from_start_step():
    recorder = Recorder()
    trainer = make_trainer(WeightNoise(std=0.5, params=["weight"], start_step=1), recorder)  # "model." may be left out
    clean = weights(trainer.task)
    trainer.fit(batches(2))
    first, second = recorder.at_batch_start
    assert all(torch.equal(first[name], clean[name]) for name in clean)  # step 0 < start_step
    assert not torch.equal(second["model.weight"], recorder.at_batch_end[0]["model.weight"])
    assert torch.equal(second["model.bias"], recorder.at_batch_end[0]["model.bias"])


def test_std_is_read_at_every_batch():
    class Silence(Callback):  # before WeightNoise: what a schedule of std would do
        def __init__(self, noise):
            self.noise = noise

        def on_batch_start(self, trainer, batch):
            self.noise.std = 0.0 if trainer.state.global_step == 1 else 0.5

    noise, recorder = WeightNoise(std=0.5), Recorder()
    trainer = make_trainer(Silence(noise), noise, recorder)
    trainer.fit(batches(3))
    assert not torch.equal(recorder.at_batch_start[0]["model.weight"], trainer.task.model.weight)  # noisy step 0
    assert all(torch.equal(recorder.at_batch_start[1][name], recorder.at_batch_end[0][name]) for name in ("model.weight",))
    assert not torch.equal(recorder.at_batch_start[2]["model.weight"], recorder.at_batch_end[1]["model.weight"])
    with pytest.raises(ValueError, match="std"):
        noise.std = -1.0


def test_it_is_a_registered_callback_with_checked_options():
    schema = CALLBACKS.schema("weight_noise")
    options = schema(std=0.05, params=["model.encoder.*"], start_step=100).model_dump()
    noise = CALLBACKS.get("weight_noise")(**options)
    assert isinstance(noise, WeightNoise) and noise.params == ("model.encoder.*",) and noise.start_step == 100
    assert schema(std=0.05).model_dump()["params"] == ("*",)
    for wrong in (dict(std=0.0), dict(std=-1.0), dict(std=0.1, start_step=-1), dict(std=0.1, pattern="*")):
        with pytest.raises(Exception, match="validation error"):
            schema(**wrong)
    with pytest.raises(ConfigError, match="'encoder.\\*' matches no trainable parameter"):
        make_trainer(WeightNoise(std=0.1, params=["encoder.*"])).fit(batches(1))
    assert noise.state_dict() == {}  # nothing to resume: the noise comes from the checkpointed generators


def test_a_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    # No state of its own: the noise comes from the checkpointed generators, and no checkpoint holds it.
    data, policy = batches(6), CheckpointPolicy(every_steps=1, keep_last=10)

    def run(folder: str, seed: int = 0, resume: bool = False, **options) -> Trainer:
        with Experiment(tmp_path / folder, tensorboard=False) as experiment:
            trainer = make_trainer(WeightNoise(std=0.3), seed=seed, accumulate_batches=2, max_epochs=2,
                                   experiment=experiment, checkpoint_policy=policy, **options)
            trainer.fit(data, resume_from=tmp_path / folder if resume else None)
        return trainer

    whole = run("whole")
    run("halves", max_steps=4)  # stops inside the second epoch
    resumed = run("halves", seed=123, resume=True)  # the checkpoint's random state must win
    assert resumed.state.global_step == whole.state.global_step == 6
    for name, value in whole.task.state_dict().items():
        assert torch.equal(value, resumed.task.state_dict()[name]), name


def test_a_new_task_from_a_stage_boundary_gets_the_noise():
    class NextStage(Callback):  # what recipe stages do at an epoch's start: another task on the trainer
        def on_epoch_start(self, trainer):
            if trainer.state.epoch == 1:
                torch.manual_seed(9)
                trainer.task = ClassificationTask(nn.Linear(6, 3))
                trainer.optimizer = torch.optim.SGD(trainer.task.parameters(), lr=LEARNING_RATE)

    recorder = Recorder()
    trainer = make_trainer(NextStage(), WeightNoise(std=0.5), recorder, max_epochs=2)
    first_task = trainer.task
    trainer.fit(batches(2))
    assert trainer.task is not first_task
    torch.manual_seed(9)
    clean = weights(ClassificationTask(nn.Linear(6, 3)))
    assert not torch.equal(recorder.at_batch_start[2]["model.weight"], clean["model.weight"])  # the new task is noisy
    gradient = gradient_at(recorder.at_batch_start[2], batches(2)[0])
    for name in clean:  # and its step is taken from its clean weights
        torch.testing.assert_close(recorder.at_batch_end[2][name], clean[name] - LEARNING_RATE * gradient[name], rtol=0, atol=1e-6)
