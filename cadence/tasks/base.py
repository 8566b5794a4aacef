"""The Task contract: what is learned from a batch.

A task owns the model, its loss(es) and whatever turns model outputs into predictions;
the model stays a plain ``nn.Module``. The trainer only calls the two methods below, so
any training objective fits by writing one small class.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn

from cadence.errors import ConfigError


@dataclasses.dataclass
class StepOutput:
    """What a task returns for one batch.

    ``loss`` is the scalar to back-propagate (training) or to average (evaluation);
    ``losses`` its named parts; ``logs`` any other scalars to record; ``predictions`` and
    ``targets`` feed the metrics; ``batch_size`` weights averages over batches; ``weight``
    is what ``loss`` is a mean over, when that is not the examples (the tokens of a loss averaged
    over tokens): accumulated batches and batches on several processes are weighted by it, so
    the update is that of the mean over all of them, whatever the split; ``records``
    (evaluation only, optional) are one JSON-able dict per example, written by the trainer to
    ``EXP_DIR/hypotheses/<split>.jsonl`` (e.g. an utterance's reference and hypothesis);
    ``decode`` (training only, optional) gives ``(predictions, targets)`` when called, for a task
    whose predictions cost a decoding: the Trainer calls it only for the batches whose training
    metrics it logs.
    """

    loss: torch.Tensor
    losses: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    logs: dict[str, torch.Tensor | float] = dataclasses.field(default_factory=dict)
    predictions: Any = None
    targets: Any = None
    batch_size: int = 1
    records: list[dict[str, Any]] | None = None
    weight: float | torch.Tensor | None = None  # None: batch_size; a tensor saves a wait for the device
    # A training step whose predictions cost a decoding (text tasks): (predictions, targets) on
    # demand, asked for only by the updates whose training metrics are logged (train_metrics_every).
    decode: Callable[[], tuple[Any, Any]] | None = None

    @property
    def normalizer(self) -> float | torch.Tensor:
        """What the loss is a mean over: ``weight``, else ``batch_size``."""
        return float(self.batch_size) if self.weight is None else self.weight


@runtime_checkable
class Task(Protocol):
    """Anything with these methods, and an ``nn.Module`` so it can move, train and save.

    A task whose steps give only losses (no predictions for metrics to score, like ``pase``)
    says so with a class attribute ``gives_predictions = False``: the Trainer then refuses any
    metric at once, instead of at the first validation.
    """

    def training_step(self, batch: Any) -> StepOutput: ...

    def validation_step(self, batch: Any) -> StepOutput: ...


def is_empty_batch(batch: Any) -> bool:
    """Whether ``batch`` holds no example (a speech batch whose every utterance was unusable).
    Tuples, lists and dicts are containers of a batch's parts, never empty batches."""
    if isinstance(batch, (tuple, list, dict)):
        return False
    try:
        return len(batch) == 0
    except TypeError:
        return False


def placeholder_step(task: nn.Module) -> StepOutput:
    """The step of a process whose batch is empty while the others train: a zero loss that
    reaches every trainable parameter, so that its zero gradients join the others' all-reduce
    and no process waits for it. It weighs nothing (``weight`` 0) in the update."""
    parameters = [parameter for parameter in task.parameters() if parameter.requires_grad]
    loss = torch.stack([parameter.sum() for parameter in parameters]).sum() * 0.0 if parameters else torch.zeros(())
    return StepOutput(loss=loss, batch_size=0, weight=0.0)


def check_task(task: Any) -> nn.Module:
    """Fail early, with a fix, when ``task`` does not meet the contract."""
    if not isinstance(task, nn.Module):
        raise TypeError(
            f"a task must be an nn.Module (it holds the model and moves with it), got {type(task).__name__}; "
            "wrap a plain model in cadence.ClassificationTask(model) or write a Task"
        )
    missing = [name for name in ("training_step", "validation_step") if not callable(getattr(task, name, None))]
    if missing:
        raise TypeError(f"{type(task).__name__} is not a Task: it lacks {', '.join(missing)}")
    return task


def refuse_duration_changes(features: nn.Module | None, why: str) -> None:
    """A ConfigError when a stage of ``features`` changes utterances' durations in training
    (it says so with ``changes_duration = True``, as ``speed_perturb`` does), for tasks whose
    targets are tied to the input's frames; ``why`` ends the message."""
    for module in features.modules() if features is not None else ():
        if getattr(module, "changes_duration", False):
            raise ConfigError(f"features: {type(module).__name__} changes each utterance's duration in training, {why}")
