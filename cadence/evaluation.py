"""One evaluation pass (validation or test): losses, metrics and per-example records.

:func:`evaluate` is what ``Trainer.evaluate`` runs. It averages the task's loss and each of
its named losses (``val/loss``, ``val/loss_ctc``, ...) weighted by batch size, feeds every
metric, sums the metrics' counts across processes, and collects the per-example records a
task may return (``StepOutput.records``: for speech recognition, each utterance's reference
and hypothesis). Records are written to ``EXP_DIR/hypotheses/<split>.jsonl`` (one file per
process: ``<split>.rank<r>.jsonl`` beside rank 0's), replaced by each new evaluation of that
split, and a few of them go to TensorBoard as a text sample.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch

from cadence.runtime.files import write_bytes_atomic
from cadence.runtime.distributed import distributed_rank_and_size
from cadence.runtime.device import move_to_device
from cadence.epoch_batches import length
from cadence.runtime.logs import progress
from cadence.metrics import Mean

if TYPE_CHECKING:
    from cadence.trainer import Trainer

__all__ = ["evaluate", "write_records"]

# Records shown in TensorBoard after each evaluation: enough to see what the model does.
TENSORBOARD_SAMPLES = 8


@torch.no_grad()
def evaluate(trainer: Trainer, data: Iterable, split: str, records: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """Loss, named losses and every metric over ``data``, keyed ``"<split>/<name>"``.

    The task's records are appended to ``records`` when given; otherwise they are saved in
    the trainer's experiment folder (see :func:`save_hypotheses`).
    """
    task = trainer.task
    was_training = task.training
    task.eval()
    task.to(trainer.device)
    means: dict[str, Mean] = {"loss": Mean("loss")}
    collected: list[dict[str, Any]] = []
    for metric in trainer.metrics:
        metric.reset()
    for batch in progress(data, trainer.progress_bar, split, total=length(data)):
        output = trainer.evaluate_batch(move_to_device(batch, trainer.device))
        means["loss"].update(output.loss.detach(), weight=output.batch_size)
        for name, value in output.losses.items():
            means.setdefault(f"loss_{name}", Mean(f"loss_{name}")).update(value.detach(), weight=output.batch_size)
        for metric in trainer.metrics:
            metric.update(output.predictions, output.targets)
        collected.extend(output.records or ())
    # Named losses are the same on every rank (the task's), so each Mean syncs the same keys.
    results = {}
    for name, mean in means.items():
        mean.sync()
        results[f"{split}/{name}"] = mean.compute()[mean.name]
    for metric in trainer.metrics:
        metric.sync()
        results.update({f"{split}/{name}": value for name, value in metric.compute().items()})
    if records is not None:
        records.extend(collected)
    elif collected and trainer.experiment is not None:
        save_hypotheses(trainer, split, collected)
    task.train(was_training)
    return results


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """One JSON line per record, written atomically (a crash leaves the old file or the new one)."""
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    write_bytes_atomic(path, lines.encode("utf-8"))


def save_hypotheses(trainer: Trainer, split: str, records: list[dict[str, Any]]) -> None:
    """``EXP_DIR/hypotheses/<split>.jsonl`` and a TensorBoard text sample of the first records."""
    experiment = trainer.experiment
    rank, _ = distributed_rank_and_size()
    name = f"{split}.jsonl" if rank == 0 else f"{split}.rank{rank}.jsonl"
    write_records(experiment.directory / "hypotheses" / name, records)
    if rank == 0:
        experiment.log_text(f"{split}/hypotheses", sample_table(records[:TENSORBOARD_SAMPLES]), step=trainer.state.global_step)


def sample_table(records: list[dict[str, Any]]) -> str:
    """A Markdown table (TensorBoard renders it) of each record's fields."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        cells = (str(record.get(column, "")).replace("|", "\\|") for column in columns)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
