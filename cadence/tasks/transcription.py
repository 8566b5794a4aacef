"""What the speech recognition tasks share: features, targets as model classes, text out.

Conventions (shared with the models and :mod:`cadence.decoding`): tokenizer ids are
``0 .. V-1``; a model has ``V + 1`` classes, class 0 being the CTC blank and the attention
decoder's start and end symbol, so token id ``t`` is class ``t + 1``.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import pydantic
import torch
from torch import nn

from cadence.bounds import NonNegativeFloat, PositiveFloat, PositiveInt, Probability
from cadence.errors import ConfigError
from cadence.metrics.error_rate import utterance_errors
from cadence.losses import LossTerm, check_loss_terms, combine_losses, l2_penalty
from cadence.tasks.base import StepOutput

logger = logging.getLogger("cadence")

__all__ = ["DecodingOptions", "TranscriptionTask"]


@pydantic.dataclasses.dataclass(config=pydantic.ConfigDict(extra="forbid", allow_inf_nan=False))
class DecodingOptions:
    """How hypotheses are searched for in validation, test, ``cadence eval`` and ``transcribe``.

    ``method``: ``greedy`` (best class per step) or ``beam``. ``beam_size``: hypotheses kept.
    ``length_penalty``: finished attention hypotheses are ranked by score / (tokens + 1) ** length_penalty
    (0 = none; longer hypotheses are favoured as it grows). ``ctc_weight``: for models with
    both heads, the weight of the CTC prefix score in a joint beam search (0 = attention only).
    ``max_length_ratio``: an attention hypothesis ends at this many tokens per encoder frame of its utterance.
    """

    method: Literal["greedy", "beam"] = "greedy"
    beam_size: PositiveInt = 8
    length_penalty: NonNegativeFloat = 0.0
    ctc_weight: Probability = 0.0
    max_length_ratio: PositiveFloat = 2.0


class TranscriptionTask(nn.Module):
    """Base of :class:`~cadence.tasks.ctc.CTCTask` and :class:`~cadence.tasks.seq2seq.Seq2SeqTask`:
    holds the model, the feature module and the tokenizer; turns batches into features and
    model classes, and token ids into text."""

    #: The loss names a subclass can compute.
    available_losses: frozenset[str] = frozenset()

    def __init__(
        self,
        model: nn.Module,
        features: nn.Module | None,
        tokenizer: Any,
        losses: dict[str, LossTerm],
        decoding: DecodingOptions,
        l2_penalty: float,
    ):
        super().__init__()
        if tokenizer is None:
            raise ConfigError(
                f"{type(self).__name__} needs a tokenizer: use data with text targets (target: text, or "
                "fsdd task: connected-digits), or pass tokenizer= yourself"
            )
        if l2_penalty < 0:
            raise ValueError(f"task.l2_penalty must be >= 0, got {l2_penalty}")
        self.model = model
        self.features = features
        self.tokenizer = tokenizer
        self.losses = check_loss_terms(dict(losses), set(self.available_losses), "task")
        self.decoding = decoding
        self.l2_penalty = l2_penalty

    def compute_features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [B, F, T], frame lengths [B]) of waveforms [B, samples] (or of features already made)."""
        if self.features is None:
            return waveforms, lengths
        return self.features(waveforms, lengths)

    def model_inputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.compute_features(batch.inputs, batch.input_lengths)

    @staticmethod
    def target_classes(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets [B, U] as model classes, i.e. token id + 1; lengths [B])."""
        if getattr(batch, "target_lengths", None) is None:
            raise ConfigError("a transcription task needs text targets (data target: text); this batch has labels")
        return batch.targets + 1, batch.target_lengths

    def references(self, batch: Any) -> list[str]:
        targets, lengths = batch.targets.tolist(), batch.target_lengths.tolist()  # host sync, evaluation only
        return [self.tokenizer.decode(tokens[:length]) for tokens, length in zip(targets, lengths)]

    def training_output(self, batch: Any, parts: dict[str, torch.Tensor], weight: torch.Tensor | None = None) -> StepOutput:
        """The weighted training loss of the named ``parts`` (plus the L2 penalty, when asked).
        ``weight``: what the loss is a mean over, when it is one mean (see ``StepOutput.weight``)."""
        if self.l2_penalty > 0:
            parts["l2"] = self.l2_penalty * l2_penalty(self.model)
        loss = combine_losses(parts, self.losses)
        return StepOutput(loss=loss + parts["l2"] if "l2" in parts else loss, losses=parts, batch_size=len(batch),
                          weight=weight)

    def texts_and_references(self, batch: Any, hypotheses: list[list[int]]) -> tuple[list[str], list[str]]:
        """Hypotheses as text, and the batch's references: what ``wer`` and ``cer`` take."""
        return [self.tokenizer.decode(tokens) for tokens in hypotheses], self.references(batch)

    def evaluation_output(self, batch: Any, parts: dict[str, torch.Tensor], hypotheses: list[list[int]],
                          terms: dict[str, LossTerm] | None = None) -> StepOutput:
        """Losses, and hypotheses against references as text (for ``wer``/``cer`` and the records).
        The loss combines ``parts`` by ``terms`` (default: the task's losses)."""
        texts, references = self.texts_and_references(batch, hypotheses)
        return StepOutput(
            loss=combine_losses(parts, terms or self.losses), losses=parts, predictions=texts, targets=references,
            batch_size=len(batch), records=self.records(batch, references, texts),
        )

    @staticmethod
    def records(batch: Any, references: list[str], hypotheses: list[str]) -> list[dict[str, Any]]:
        """One line per utterance for ``hypotheses/<split>.jsonl``, with its word errors."""
        ids = batch.ids if batch.ids is not None else [str(index) for index in range(len(references))]
        records = []
        for key, reference, hypothesis in zip(ids, references, hypotheses):
            errors = utterance_errors(reference, hypothesis, "word")
            records.append({
                "id": str(key), "reference": reference, "hypothesis": hypothesis,
                "word_errors": errors["substitutions"] + errors["deletions"] + errors["insertions"],
                "reference_words": errors["reference_units"],
            })
        return records

    def transcribe(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Text of each waveform ``[B, samples]`` (``lengths`` in samples), with the task's decoding."""
        raise NotImplementedError
