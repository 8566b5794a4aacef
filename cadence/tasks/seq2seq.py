"""Speech recognition with an attention encoder-decoder (Listen-Attend-Spell, TDS).

The model offers ``encode(features, lengths) -> (memory [B, S, D], memory_lengths [B])``, a
``decoder`` that steps one output at a time (``initial_state`` / ``step``, see
:mod:`cadence.models.seq2seq`), and optionally a ``ctc_head`` on the encoder output.

Training feeds the decoder the reference (teacher forcing): the previous classes are
``[0, y1, ..., yU]`` (0 = start) and the targets ``[y1, ..., yU, 0]`` (0 = end). With
``scheduled_sampling: p`` each previous class is, with probability ``p``, the decoder's own
best guess at the step before instead (Bengio et al., 2015). Losses: ``attention``
(cross-entropy with label smoothing) and ``ctc`` (the auxiliary CTC head), each weighted,
either possibly ``evaluation_only``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cadence.bounds import NonNegativeFloat, Probability, ProperFraction
from cadence.decoding import attention_beam_search, attention_greedy
from cadence.errors import ConfigError
from cadence.models.seq2seq import teacher_forcing
from cadence.registry import TASKS
from cadence.losses import CTCNormalization, LossTerm, ctc_feasible, ctc_loss, sequence_cross_entropy
from cadence.tasks.base import StepOutput
from cadence.tasks.transcription import DecodingOptions, TranscriptionTask

__all__ = ["Seq2SeqTask"]


@TASKS.register("seq2seq")
class Seq2SeqTask(TranscriptionTask):
    """Attention encoder-decoder training (teacher forcing, scheduled sampling) and decoding.

    Args:
        model: an encoder-decoder model (see the module docstring).
        losses: named losses: ``attention`` and, for a model with a CTC head, ``ctc``.
        label_smoothing: of the attention cross-entropy in training (evaluation reports the plain one).
        scheduled_sampling: probability of feeding the decoder its own previous prediction.
        ctc_normalize: normalization of the auxiliary CTC loss.
        decoding: greedy, beam, or joint CTC/attention beam search (``decoding.ctc_weight``).
    """

    available_losses = frozenset({"attention", "ctc"})

    def __init__(
        self,
        model: nn.Module,
        features: nn.Module | None = None,
        tokenizer: Any = None,
        losses: dict[str, LossTerm] = {"attention": LossTerm()},
        label_smoothing: ProperFraction = 0.0,
        scheduled_sampling: Probability = 0.0,
        ctc_normalize: CTCNormalization = "target_length",
        decoding: DecodingOptions = DecodingOptions(),
        l2_penalty: NonNegativeFloat = 0.0,
    ):
        super().__init__(model, features, tokenizer, losses, decoding, l2_penalty)
        has_ctc_head = getattr(model, "ctc_head", None) is not None
        if "ctc" in self.losses and not has_ctc_head:
            raise ConfigError("task.losses.ctc: the model has no CTC head; enable it in the model (ctc_head: true) or drop the loss")
        if decoding.ctc_weight > 0 and not has_ctc_head:
            raise ConfigError("task.decoding.ctc_weight: joint decoding needs a model with a CTC head (ctc_head: true)")
        if decoding.ctc_weight > 0 and decoding.method != "beam":
            raise ConfigError("task.decoding.ctc_weight: joint CTC/attention scoring is a beam search; set decoding.method: beam")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= scheduled_sampling <= 1.0:
            raise ValueError(f"task.scheduled_sampling must be in [0, 1], got {scheduled_sampling}")
        self.label_smoothing = label_smoothing
        self.scheduled_sampling = scheduled_sampling
        self.ctc_normalize = ctc_normalize

    @staticmethod
    def decoder_sequences(targets: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(previous classes [B, U+1] = [0, y...], outputs [B, U+1] = [y..., 0], output lengths [B] = U+1)."""
        batch = targets.shape[0]
        start = targets.new_zeros(batch, 1)
        previous = torch.cat([start, targets], dim=1)
        # The end symbol (0) goes right after each utterance's last token; padding is already 0.
        outputs = torch.cat([targets, start], dim=1)
        outputs = outputs * (torch.arange(outputs.shape[1], device=targets.device)[None, :] < lengths[:, None])
        return previous, outputs, lengths + 1

    def decoder_logits(self, memory: torch.Tensor, memory_lengths: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """[B, U+1, C], feeding the reference, or (scheduled sampling) sometimes the decoder's own guesses."""
        decoder = self.model.decoder
        if not (self.training and self.scheduled_sampling > 0):
            # Decoders without input feeding (TDS) run every step in one parallel pass.
            parallel = getattr(decoder, "teacher_forcing", None)
            if callable(parallel):
                return parallel(memory, memory_lengths, previous)
            return teacher_forcing(decoder, memory, memory_lengths, previous)
        state = decoder.initial_state(memory, memory_lengths)
        fed = previous[:, 0]
        steps = []
        for position in range(previous.shape[1]):
            logits, state = decoder.step(fed, state)
            steps.append(logits)
            if position + 1 < previous.shape[1]:
                own = logits.detach().argmax(-1)
                sampled = torch.rand(own.shape, device=own.device) < self.scheduled_sampling
                fed = torch.where(sampled, own, previous[:, position + 1])
        return torch.stack(steps, dim=1)

    def loss_parts(self, batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Named losses, plus the encoder output (memory, lengths) for decoding."""
        features, lengths = self.model_inputs(batch)
        targets, target_lengths = self.target_classes(batch)
        memory, memory_lengths = self.model.encode(features, lengths)
        previous, outputs, output_lengths = self.decoder_sequences(targets, target_lengths)
        logits = self.decoder_logits(memory, memory_lengths, previous)
        smoothing = self.label_smoothing if self.training else 0.0
        parts = {"attention": sequence_cross_entropy(logits.float(), outputs, output_lengths, smoothing)}
        if "ctc" in self.losses:
            log_probs = F.log_softmax(self.model.ctc_head(memory).float(), dim=-1)
            # Utterances too long for the encoder's frames are left out (as in CTCTask).
            keep = ctc_feasible(targets, target_lengths, memory_lengths).nonzero().squeeze(1)
            parts["ctc"] = ctc_loss(
                log_probs[keep], memory_lengths[keep], targets[keep], target_lengths[keep], normalize=self.ctc_normalize,
            ) if keep.numel() else log_probs.sum() * 0.0
        return parts, memory, memory_lengths

    def decode(self, memory: torch.Tensor, memory_lengths: torch.Tensor) -> list[list[int]]:
        """Token ids of the best hypothesis of each utterance."""
        options = self.decoding
        decoder = self.model.decoder
        # Each utterance's own limit, from its encoder length: results do not depend on padding.
        if options.method == "greedy":
            return attention_greedy(decoder, memory, memory_lengths, max_length_ratio=options.max_length_ratio)
        ctc_log_probs = None
        if options.ctc_weight > 0:
            ctc_log_probs = F.log_softmax(self.model.ctc_head(memory).float(), dim=-1)
        nbest = attention_beam_search(
            decoder, memory, memory_lengths, beam_size=options.beam_size, max_length_ratio=options.max_length_ratio,
            length_penalty=options.length_penalty, ctc_log_probs=ctc_log_probs, ctc_lengths=memory_lengths,
            ctc_weight=options.ctc_weight,
        )
        return [hypotheses[0][0] if hypotheses else [] for hypotheses in nbest]

    def training_step(self, batch: Any) -> StepOutput:
        parts, memory, memory_lengths = self.loss_parts(batch)
        # The attention loss alone is a mean over the output tokens: batches weigh their tokens.
        # With the CTC loss too, two means of different things: batches weigh their utterances.
        weight = None if "ctc" in self.losses else (batch.target_lengths + 1).sum().to(torch.float32)
        output = self.training_output(batch, parts, weight)
        output.decode = lambda: self.texts_and_references(batch, self.greedy_in_training(memory.detach(), memory_lengths))
        return output

    @torch.no_grad()
    def greedy_in_training(self, memory: torch.Tensor, memory_lengths: torch.Tensor) -> list[list[int]]:
        """Greedy hypotheses for a training metric, the model as it trains (dropout on), whatever
        the decoding method: a beam search every few steps would slow training down."""
        return attention_greedy(self.model.decoder, memory, memory_lengths, max_length_ratio=self.decoding.max_length_ratio)

    def validation_step(self, batch: Any) -> StepOutput:
        parts, memory, memory_lengths = self.loss_parts(batch)
        return self.evaluation_output(batch, parts, self.decode(memory, memory_lengths))

    @torch.no_grad()
    def transcribe(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        features, feature_lengths = self.compute_features(waveforms, lengths)
        memory, memory_lengths = self.model.encode(features, feature_lengths)
        return [self.tokenizer.decode(tokens) for tokens in self.decode(memory, memory_lengths)]
