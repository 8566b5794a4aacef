"""Utterance (or any input) classification with cross-entropy."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cadence.bounds import NonNegativeFloat, ProperFraction
from cadence.errors import ConfigError
from cadence.losses import l2_penalty
from cadence.registry import TASKS
from cadence.tasks.base import StepOutput


@TASKS.register("classification")
class ClassificationTask(nn.Module):
    """Cross-entropy classification of one label per example.

    Batches may be ``(inputs, targets)`` pairs, mappings with ``inputs``/``targets`` keys,
    or speech batches with ``inputs``, ``input_lengths`` and ``targets`` attributes (see
    :class:`cadence.data.dataset.Batch`). When a ``features`` module is given, it turns
    ``(waveforms [B, samples], lengths)`` into ``(features [B, n_mels, frames], frame_lengths)``
    on the model's device; a speech batch's model is called as ``model(inputs, lengths)``,
    any other as ``model(inputs)``.

    ``l2_penalty``: weight of the sum of squared weights of the model (:func:`cadence.losses.l2_penalty`:
    every parameter with more than one dimension) added to the training loss, as the text tasks do;
    when it is above 0 the training step reports ``cross_entropy`` and ``l2`` as named losses
    (``train/loss_cross_entropy``, ``train/loss_l2``). Evaluation reports the plain cross-entropy.

    >>> task = ClassificationTask(nn.Linear(4, 3))
    >>> out = task.training_step((torch.randn(8, 4), torch.randint(0, 3, (8,))))
    >>> out.predictions.shape
    torch.Size([8, 3])
    """

    def __init__(
        self,
        model: nn.Module,
        features: nn.Module | None = None,
        label_smoothing: ProperFraction = 0.0,
        l2_penalty: NonNegativeFloat = 0.0,
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}")
        if l2_penalty < 0:
            raise ValueError(f"task.l2_penalty must be >= 0, got {l2_penalty}")
        self.model = model
        self.features = features
        self.label_smoothing = label_smoothing
        self.l2_penalty = l2_penalty

    def logits(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits [B, classes], targets [B])."""
        if isinstance(batch, (tuple, list)):
            inputs, targets = batch
            return self.model(inputs), targets
        if isinstance(batch, dict):
            return self.model(batch["inputs"]), batch["targets"]
        if getattr(batch, "target_lengths", None) is not None:
            raise ConfigError(
                "task: classification needs one label per utterance, but the data gives token sequences "
                "(data target: text); use target: label, or a sequence task"
            )
        inputs, lengths = batch.inputs, batch.input_lengths
        if self.features is not None:
            inputs, lengths = self.features(inputs, lengths)
        return self.model(inputs, lengths), batch.targets

    def training_step(self, batch: Any) -> StepOutput:
        logits, targets = self.logits(batch)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        losses = {}
        if self.l2_penalty > 0:
            losses = {"cross_entropy": loss, "l2": self.l2_penalty * l2_penalty(self.model)}
            loss = loss + losses["l2"]
        return StepOutput(loss=loss, losses=losses, predictions=logits.detach(), targets=targets,
                          batch_size=targets.shape[0])

    def validation_step(self, batch: Any) -> StepOutput:
        # Evaluation reports the plain cross-entropy, comparable across smoothing settings.
        logits, targets = self.logits(batch)
        loss = F.cross_entropy(logits, targets)
        return StepOutput(loss=loss, predictions=logits, targets=targets, batch_size=targets.shape[0])
