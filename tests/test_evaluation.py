"""One evaluation pass, given what it needs explicitly (no Trainer)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cadence.evaluation import evaluate, save_hypotheses
from cadence.experiment import Experiment
from cadence.metrics import Accuracy
from cadence.tasks import ClassificationTask, StepOutput


def test_the_loss_is_weighted_by_batch_size_and_metrics_count_every_example():
    inputs, targets = torch.randn(10, 4), torch.randint(0, 3, (10,))
    task = ClassificationTask(torch.nn.Linear(4, 3))
    data = DataLoader(TensorDataset(inputs, targets), batch_size=4)  # batches of 4, 4 and 2
    result = evaluate(task, data, "test", [Accuracy(num_classes=3)], torch.device("cpu"))
    with torch.no_grad():
        logits = task.model(inputs)
    expected_loss = torch.nn.functional.cross_entropy(logits, targets).item()
    expected_accuracy = (logits.argmax(-1) == targets).float().mean().item()
    assert result.metrics["test/loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert result.metrics["test/accuracy"] == pytest.approx(expected_accuracy)


def test_a_custom_batch_step_gives_records_and_the_task_mode_is_put_back():
    task = ClassificationTask(torch.nn.Linear(4, 3)).train()
    data = DataLoader(TensorDataset(torch.randn(6, 4), torch.randint(0, 3, (6,))), batch_size=3)

    def with_records(batch):
        output = task.validation_step(batch)
        return StepOutput(output.loss, predictions=output.predictions, targets=output.targets, batch_size=output.batch_size,
                          records=[{"target": int(target)} for target in batch[1]])

    result = evaluate(task, data, "val", [], torch.device("cpu"), evaluate_batch=with_records)
    assert len(result.records) == 6 and sorted(result.metrics) == ["val/loss"]
    assert task.training


def test_hypotheses_are_written_as_json_lines(tmp_path):
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        save_hypotheses(experiment, "test", [{"id": "a", "hypothesis": "one"}], step=3)
    lines = (tmp_path / "run" / "hypotheses" / "test.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"id": "a", "hypothesis": "one"}]
