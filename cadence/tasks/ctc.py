"""Speech recognition with a CTC model (e.g. DeepSpeech2): one class per output frame.

The model maps ``(features [B, F, T], lengths [B])`` to ``(logits [B, T', C], output_lengths [B])``
with ``C = len(tokenizer) + 1`` (class 0 = blank). Training minimises the CTC loss; an
utterance whose target cannot fit its output frames (it needs one frame per token plus one
between repeated tokens) is left out of the loss, and logged once with the reason, instead
of making the loss infinite. Evaluation decodes greedily or by prefix beam search and
returns text, so the ``wer`` and ``cer`` metrics apply.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cadence.bounds import NonNegativeFloat
from cadence.decoding import ctc_greedy, ctc_prefix_beam_search
from cadence.losses import CTCNormalization, LossTerm, ctc_feasible, ctc_loss, ctc_minimum_frames
from cadence.registry import TASKS
from cadence.tasks.base import StepOutput
from cadence.tasks.transcription import DecodingOptions, TranscriptionTask, logger

__all__ = ["CTCTask"]


@TASKS.register("ctc")
class CTCTask(TranscriptionTask):
    """CTC training and decoding of a frame-wise model.

    Args:
        model: returns ``(logits [B, T', C], output_lengths [B])``.
        features: turns ``(waveforms, lengths)`` into ``(features [B, F, T], lengths)``.
        tokenizer: text <-> token ids (injected from the data).
        losses: named losses; this task computes ``ctc``.
        normalize, zero_infinity: see :func:`cadence.losses.ctc_loss`.
        decoding: greedy or prefix beam search (see :class:`DecodingOptions`).
        l2_penalty: weight of the sum of squared weights added to the training loss.
    """

    available_losses = frozenset({"ctc"})

    def __init__(
        self,
        model: nn.Module,
        features: nn.Module | None = None,
        tokenizer: Any = None,
        losses: dict[str, LossTerm] = {"ctc": LossTerm()},
        normalize: CTCNormalization = "target_length",
        zero_infinity: bool = True,
        decoding: DecodingOptions = DecodingOptions(),
        l2_penalty: NonNegativeFloat = 0.0,
    ):
        super().__init__(model, features, tokenizer, losses, decoding, l2_penalty)
        self.normalize = normalize
        self.zero_infinity = zero_infinity
        self._reported_too_long: set[str] = set()

    def forward_batch(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probabilities [B, T', C], output lengths [B])."""
        features, lengths = self.model_inputs(batch)
        logits, output_lengths = self.model(features, lengths)
        return F.log_softmax(logits.float(), dim=-1), output_lengths

    def loss_parts(self, batch: Any, log_probs: torch.Tensor, output_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        targets, target_lengths = self.target_classes(batch)
        feasible = ctc_feasible(targets, target_lengths, output_lengths)
        if not bool(feasible.all()):  # host sync: once per batch, cheap next to the CTC loss itself
            self.report_too_long(batch, targets, target_lengths, output_lengths, feasible)
        if not bool(feasible.any()):
            # Nothing to learn from; a zero that keeps the graph (and DDP's gradient hooks) alive.
            return {"ctc": log_probs.sum() * 0.0}
        keep = feasible.nonzero().squeeze(1)
        loss = ctc_loss(
            log_probs[keep], output_lengths[keep], targets[keep], target_lengths[keep],
            normalize=self.normalize, zero_infinity=self.zero_infinity,
        )
        return {"ctc": loss}

    def report_too_long(self, batch, targets, target_lengths, output_lengths, feasible) -> None:
        needed = ctc_minimum_frames(targets, target_lengths)
        for index in (~feasible).nonzero().squeeze(1).tolist():
            key = str(batch.ids[index]) if batch.ids is not None else f"#{index}"
            if key in self._reported_too_long:
                continue
            self._reported_too_long.add(key)
            logger.warning(
                "skipped utterance %s in the CTC loss (reason: target_too_long): its %d tokens need at least %d "
                "output frames, the model gives %d; lower the model's time stride or drop such utterances",
                key, int(target_lengths[index]), int(needed[index]), int(output_lengths[index]),
            )

    def decode(self, log_probs: torch.Tensor, output_lengths: torch.Tensor) -> list[list[int]]:
        """Token ids of the best hypothesis of each utterance."""
        if self.decoding.method == "greedy":
            return ctc_greedy(log_probs, output_lengths)
        nbest = ctc_prefix_beam_search(log_probs, output_lengths, beam_size=self.decoding.beam_size)
        return [hypotheses[0][0] if hypotheses else [] for hypotheses in nbest]

    def training_step(self, batch: Any) -> StepOutput:
        log_probs, output_lengths = self.forward_batch(batch)
        parts = self.loss_parts(batch, log_probs, output_lengths)
        output = self.training_output(batch, parts, self.loss_weight(batch, output_lengths))
        # Greedy whatever the decoding method: a training metric is a trend to watch, and a beam
        # search every few steps would slow training down.
        output.decode = lambda: self.texts_and_references(batch, ctc_greedy(log_probs.detach(), output_lengths))
        return output

    def loss_weight(self, batch: Any, output_lengths: torch.Tensor) -> torch.Tensor:
        """What the CTC loss is a mean over: the target tokens (``normalize="tokens"``), else the
        utterances; those too long for their frames are left out of the loss and of its weight.
        Batches of several processes or of an accumulated update then weigh what they hold."""
        targets, target_lengths = self.target_classes(batch)
        feasible = ctc_feasible(targets, target_lengths, output_lengths)
        if self.normalize == "tokens":
            return (target_lengths * feasible).sum().to(torch.float32)
        return feasible.sum().to(torch.float32)

    def validation_step(self, batch: Any) -> StepOutput:
        log_probs, output_lengths = self.forward_batch(batch)
        parts = self.loss_parts(batch, log_probs, output_lengths)
        return self.evaluation_output(batch, parts, self.decode(log_probs, output_lengths))

    @torch.no_grad()
    def transcribe(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        features, feature_lengths = self.compute_features(waveforms, lengths)
        logits, output_lengths = self.model(features, feature_lengths)
        hypotheses = self.decode(F.log_softmax(logits.float(), dim=-1), output_lengths)
        return [self.tokenizer.decode(tokens) for tokens in hypotheses]
