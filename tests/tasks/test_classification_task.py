import json

import pydantic
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import cadence.config.components  # noqa: F401  (registers the built-ins)
from cadence import ClassificationTask, Trainer
from cadence.experiment import Experiment
from cadence.registry import TASKS


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(10, 6, generator=generator), torch.randint(0, 3, (10,), generator=generator)


def test_without_l2_penalty_the_loss_is_the_cross_entropy_alone():
    task = ClassificationTask(small_model(), label_smoothing=0.1)
    inputs, targets = batch()
    output = task.training_step((inputs, targets))
    assert output.losses == {}  # nothing new reported by default
    assert torch.equal(output.loss, F.cross_entropy(task.model(inputs), targets, label_smoothing=0.1))


def test_l2_penalty_is_added_to_the_training_loss_and_reported():
    task = ClassificationTask(small_model(), label_smoothing=0.1, l2_penalty=1e-2)
    inputs, targets = batch()
    output = task.training_step((inputs, targets))
    cross_entropy = F.cross_entropy(task.model(inputs), targets, label_smoothing=0.1)
    weights = [task.model[0].weight, task.model[2].weight]  # matrices only: biases stay free
    penalty = 1e-2 * sum(weight.pow(2).sum() for weight in weights)
    assert set(output.losses) == {"cross_entropy", "l2"}
    torch.testing.assert_close(output.losses["cross_entropy"], cross_entropy)
    torch.testing.assert_close(output.losses["l2"], penalty)
    torch.testing.assert_close(output.loss, cross_entropy + penalty)
    output.loss.backward()
    gradient, bias_gradient = task.model[2].weight.grad.clone(), task.model[2].bias.grad.clone()
    task.zero_grad()
    cross_entropy.backward()
    torch.testing.assert_close(gradient, task.model[2].weight.grad + 2 * 1e-2 * task.model[2].weight.detach())
    torch.testing.assert_close(bias_gradient, task.model[2].bias.grad)  # biases: the cross-entropy's alone
    # Evaluation reports the plain cross-entropy, comparable across settings.
    evaluation = task.validation_step((inputs, targets))
    torch.testing.assert_close(evaluation.loss, F.cross_entropy(task.model(inputs), targets))


def test_l2_penalty_is_a_checked_recipe_key_and_its_parts_are_logged(tmp_path):
    schema = TASKS.schema("classification")
    assert schema(l2_penalty=1e-4).l2_penalty == 1e-4 and schema().l2_penalty == 0.0
    for wrong in (-1.0, True):
        with pytest.raises(pydantic.ValidationError):
            schema(l2_penalty=wrong)
    with pytest.raises(ValueError, match="l2_penalty"):
        ClassificationTask(small_model(), l2_penalty=-1.0)
    task = ClassificationTask(small_model(), l2_penalty=1e-3)
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), max_epochs=1, progress_bar=False,
                experiment=experiment).fit([batch()])
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epoch = next(line for line in lines if "train/loss_l2" in line)
    assert epoch["train/loss"] == pytest.approx(epoch["train/loss_cross_entropy"] + epoch["train/loss_l2"], rel=1e-5)
