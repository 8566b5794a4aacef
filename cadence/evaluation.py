"""One evaluation pass (validation or test): losses, metrics and per-example records.

:func:`evaluate` averages the task's loss and each of its named losses (``val/loss``,
``val/loss_ctc``, ...) weighted by batch size, feeds every metric, sums the metrics' counts
across processes, and collects the per-example records a task may return
(``StepOutput.records``: for speech recognition, each utterance's reference and hypothesis),
every process's. :func:`save_hypotheses` writes records to ``EXP_DIR/hypotheses/<split>.jsonl``,
replaced by each new evaluation of that split, and a few of them to TensorBoard as a text sample.

>>> from torch.utils.data import DataLoader, TensorDataset
>>> from cadence.tasks import ClassificationTask
>>> from cadence.metrics import Accuracy
>>> task = ClassificationTask(torch.nn.Linear(4, 3))
>>> data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,))), batch_size=4)
>>> sorted(evaluate(task, data, "val", [Accuracy(num_classes=3)], torch.device("cpu")).metrics)
['val/accuracy', 'val/loss']
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from cadence.experiment import Experiment
from cadence.metrics import Mean, Metric
from cadence.resumable import length
from cadence.runtime.device import move_to_device
from cadence.runtime.distributed import all_gather_objects, world_size
from cadence.runtime.files import strict_json, write_bytes_atomic
from cadence.runtime.logs import progress
from cadence.tasks.base import StepOutput

__all__ = ["Evaluation", "evaluate", "save_hypotheses", "write_records"]

# Records shown in TensorBoard after each evaluation: enough to see what the model does.
TENSORBOARD_SAMPLES = 8


@dataclasses.dataclass
class Evaluation:
    metrics: dict[str, float]  # "<split>/<name>" -> value
    records: list[dict[str, Any]]  # the task's per-example records, in data order
    batches: int = 0  # how many batches this process evaluated (none: every value is NaN)


@torch.no_grad()
def evaluate(
    task: nn.Module, data: Iterable, split: str, metrics: Sequence[Metric], device: torch.device, *,
    evaluate_batch: Callable[[Any], StepOutput] | None = None, progress_bar: bool = False,
) -> Evaluation:
    """Loss, named losses and every metric over ``data``, keyed ``"<split>/<name>"``, and the records.

    ``evaluate_batch`` computes one batch's output (default: ``task.validation_step``); the
    task's train/eval mode is put back afterwards.
    """
    evaluate_batch = evaluate_batch or task.validation_step
    was_training = task.training
    task.eval()
    task.to(device)
    means: dict[str, Mean] = {"loss": Mean("loss")}
    records: list[dict[str, Any]] = []
    for metric in metrics:
        metric.reset()
    batches = 0
    for batch in progress(data, progress_bar, split, total=length(data)):
        batches += 1
        output = evaluate_batch(move_to_device(batch, device))
        means["loss"].update(output.loss.detach(), weight=output.batch_size)
        for name, value in output.losses.items():
            means.setdefault(f"loss_{name}", Mean(f"loss_{name}")).update(value.detach(), weight=output.batch_size)
        if metrics and output.predictions is None:
            names = ", ".join(type(metric).__name__ for metric in metrics)
            raise ConfigError(f"metrics: {type(task).__name__} gives no predictions to score ({names}); "
                              "list none (metrics: []) or metrics of a task that predicts")
        for metric in metrics:
            metric.update(output.predictions, output.targets)
        records.extend(output.records or ())
    # Named losses are the same on every rank (the task's), so each Mean syncs the same keys.
    results = {}
    for name, mean in means.items():
        mean.sync()
        results[f"{split}/{name}"] = mean.compute()[mean.name]
    for metric in metrics:
        metric.sync()
        results.update({f"{split}/{name}": value for name, value in metric.compute().items()})
    if world_size() > 1:  # every process's records, process by process (rank 0 writes them)
        records = [record for part in all_gather_objects(records) for record in part]
    task.train(was_training)
    return Evaluation(results, records, batches)


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """One strict JSON line per record (a non-finite number as null), written atomically (a
    crash leaves the old file or the new one)."""
    lines = "".join(strict_json(record, ensure_ascii=False) + "\n" for record in records)
    write_bytes_atomic(path, lines.encode("utf-8"))


def save_hypotheses(experiment: Experiment, split: str, records: list[dict[str, Any]], step: int) -> None:
    """``EXP_DIR/hypotheses/<split>.jsonl`` and a TensorBoard text sample of the first records."""
    write_records(experiment.directory / "hypotheses" / f"{split}.jsonl", records)
    experiment.log_text(f"{split}/hypotheses", sample_table(records[:TENSORBOARD_SAMPLES]), step=step)


def sample_table(records: list[dict[str, Any]]) -> str:
    """A Markdown table (TensorBoard renders it) of each record's fields."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        cells = (str(record.get(column, "")).replace("|", "\\|") for column in columns)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
