"""One evaluation pass, given what it needs explicitly (no Trainer)."""

from __future__ import annotations

import json
import logging

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


def strict_json_loads(text: str):
    """What a strict parser (JavaScript's, jq's, Go's) accepts: no NaN, Infinity or -Infinity."""
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_hypotheses_with_a_non_finite_value_are_strict_json(tmp_path):
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        save_hypotheses(experiment, "test", [{"id": "a", "score": float("nan")}, {"id": "b", "score": float("-inf")}], step=3)
    lines = (tmp_path / "run" / "hypotheses" / "test.jsonl").read_text().splitlines()
    assert [strict_json_loads(line) for line in lines] == [{"id": "a", "score": None}, {"id": "b", "score": None}]


def test_cadence_eval_prints_strict_json_when_a_metric_is_nan(monkeypatch, capsys):
    import cadence.commands.inference as inference
    from cadence.commands.cli import main

    def nan_loss(path, split, device, *options):  # what a NaN in the test audio gave: test/loss NaN
        return {"checkpoint": str(path), "split": split, "metrics": {"test/loss": float("nan"), "test/accuracy": 0.1}}

    monkeypatch.setattr(inference, "evaluate_checkpoint", nan_loss)
    assert main(["eval", "runs/x"]) == 0
    report = strict_json_loads(capsys.readouterr().out)
    assert report["metrics"] == {"test/loss": None, "test/accuracy": 0.1}


def test_cadence_eval_warns_once_with_its_level_about_a_damaged_checkpoint(tmp_path, fsdd_root, capsys):
    from pathlib import Path

    from cadence.commands.cli import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "fsdd" / "digits.yaml"
    small = ["data.max_train_utterances=60", "data.max_eval_utterances=20", "model.channels=8", "model.layers=2",
             "trainer.max_epochs=3", "trainer.progress_bar=false", "checkpoint.keep_last=3"]
    assert main(["train", str(recipe), *small, "--exp-dir", str(tmp_path / "run")]) == 0
    checkpoints = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert len(checkpoints) == 3
    damaged = checkpoints[-1]  # the newest (and, on this data, the best or close to it)
    (damaged / "tensors.safetensors").write_bytes(b"damaged")
    capsys.readouterr()
    cadence_logger = logging.getLogger("cadence")
    for handler in list(cadence_logger.handlers):  # as in a fresh process: eval sets up no logging itself
        cadence_logger.removeHandler(handler)
    assert main(["eval", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["checkpoint"] != str(damaged)
    about_it = [line for line in captured.err.splitlines() if damaged.name in line]
    assert len(about_it) == 1, captured.err
    assert " WARNING: " in about_it[0], about_it
