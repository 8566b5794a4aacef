"""Frame classification against a fixed alignment: the second half of RETURNN's realignment pipeline.

A CTC model is trained; the ``realign`` stage function (:mod:`cadence.realignment`) then
force-aligns every training utterance with it and writes the paths as the ``alignment``
field of a manifest (one model class per OUTPUT frame: 0 the blank, token id + 1 otherwise).
:class:`FramewiseTask` trains the same model against those paths with frame-wise
cross-entropy: every output frame is a classification with a known answer, so there is no
sum over paths and the targets stay put while the model changes (until the next realignment).

The model contract is :class:`~cadence.tasks.ctc.CTCTask`'s (``logits [B, T', C]``, ``C`` =
tokens + 1), and so is decoding (greedy or prefix beam search over the frame posteriors): the
``wer`` and ``cer`` metrics apply as for CTC, and a CTC model and a frame-wise one can follow
each other in the stages of one run, sharing every tensor.

Alignments are looked up by utterance id. An alignment fits only a model with the time
stride of the model that made it: a training utterance without one, or whose alignment is
not as long as the model's output, is an error that names it. Validation compares against
``valid_alignments`` (the ``realign`` stage writes them for the validation data too): the loss
``framewise`` and, through the ``frame_accuracy`` metric, the share of output frames whose
best class is the aligned one. Data with no alignment there (the test split, or no
``valid_alignments`` at all) has no frame-wise figures: ``frame_accuracy`` is NaN (cadence's
metrics keep their keys and report NaN for what they did not see), and its loss is the CTC
loss of the same outputs (``loss_ctc``; the trainer stops on a validation loss that is not
finite), while WER and CER are reported as usual.

    >>> import json, tempfile, pathlib
    >>> from cadence.data.tokenizers import WordTokenizer
    >>> from cadence.data.dataset import Batch
    >>> class Frames(nn.Module):  # logits = the input features themselves: [B, C, T] -> [B, T, C]
    ...     def forward(self, features, lengths):
    ...         return features.transpose(1, 2), lengths
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "aligned.jsonl"
    >>> _ = path.write_text(json.dumps({"id": "u1", "audio": "u1.wav", "duration": 1.0, "alignment": [0, 1, 1, 0]}) + "\\n")
    >>> task = FramewiseTask(Frames(), tokenizer=WordTokenizer.from_texts(["one"]), alignments=str(path))
    >>> logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 9.0, 9.0, 0.0]]])  # [B=1, C=2, T=4]
    >>> batch = Batch(logits, torch.tensor([4]), torch.tensor([[0]]), torch.tensor([1]), ["u1"], ["s"])
    >>> round(task.training_step(batch).loss.item(), 3)  # -log p(aligned class), averaged over 4 frames
    0.347
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from cadence.bounds import NonNegativeFloat
from cadence.errors import ConfigError, DataError
from cadence.losses import CTCNormalization, LossTerm
from cadence.metrics.base import Metric
from cadence.registry import METRICS, TASKS
from cadence.runtime.files import json_lines
from cadence.tasks.base import StepOutput, refuse_duration_changes
from cadence.tasks.ctc import CTCTask
from cadence.tasks.transcription import DecodingOptions

__all__ = ["FrameAccuracy", "FramewiseTask", "TranscriptsWithFrames", "read_alignments"]

# Frames beyond an utterance's output length: not a target (F.nll_loss's ignore_index).
PADDING = -100
# The likely cause of an alignment of the wrong length, said in every such error.
OTHER_STRIDE = ("an alignment fits only a model that subsamples time as the model that made it did (its time stride); "
                "realign with this model, or train the model the alignments were made with")


def read_alignments(path: str | Path) -> dict[str, torch.Tensor]:
    """``{id: classes [T']}`` of a manifest's lines that have an ``alignment`` (int64 tensors).

    The data pipeline writes and validates manifests (:mod:`cadence.data.manifest`); this
    reader is the task's own because tasks do not import the data pipeline (the loop's layer
    rule in ``pyproject.toml``). It checks what it uses, with ``path:line``: each line is a
    JSON object with a string ``id`` (unique) and, where present, an ``alignment`` that is a
    non-empty list of ints >= 0.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: alignment manifest not found; the realign stage function writes one into the run's "
                        "alignments/ folder (a run folder moved since keeps the old path in task.alignments)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the alignment manifest ({error})") from None
    table: dict[str, torch.Tensor] = {}
    for _, where, record in json_lines(text, path):
        key = record.get("id") if isinstance(record, dict) else None
        if not isinstance(key, str) or not key:
            raise DataError(f"{where}: expected a manifest line (a JSON object with a non-empty string 'id')")
        if key in table:
            raise DataError(f"{where}: id {key!r} repeats an earlier line; ids must be unique")
        alignment = record.get("alignment")
        if alignment is None:
            continue
        if (not isinstance(alignment, list) or not alignment
                or not all(isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in alignment)):
            raise DataError(f"{where}: field 'alignment' must be a non-empty list of model classes (ints >= 0)")
        table[key] = torch.tensor(alignment, dtype=torch.int64)
    return table


class TranscriptsWithFrames(list):
    """A batch's hypothesis texts (what ``wer`` and ``cer`` read, as from any text task) that
    also carry the batch's frame counts against its alignments (what ``frame_accuracy`` reads):
    ``frame_counts`` is ``(correct frames, aligned frames)``, or None when the batch had no
    alignments. A metric sees only a step's predictions and targets, so the counts travel here."""

    def __init__(self, texts: Iterable[str], frame_counts: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__(texts)
        self.frame_counts = frame_counts


@METRICS.register("frame_accuracy")
class FrameAccuracy(Metric):
    """The share of aligned output frames whose best class is the aligned one
    (``frame_accuracy``), and how many frames that counts (``frame_accuracy_frames``).

    Fed by :class:`FramewiseTask` (any other task's predictions carry no frame counts and add
    nothing): NaN when no frame was counted.

    >>> metric = FrameAccuracy()
    >>> metric.update(TranscriptsWithFrames(["one"], (torch.tensor(3), torch.tensor(4))), ["one"])
    >>> metric.update(["two"], ["two"])  # a CTC step's texts: nothing to count
    >>> metric.compute()
    {'frame_accuracy': 0.75, 'frame_accuracy_frames': 4}
    """

    name = "frame_accuracy"

    def __init__(self) -> None:
        super().__init__()
        self.add_count("correct", torch.zeros((), dtype=torch.int64))
        self.add_count("frames", torch.zeros((), dtype=torch.int64))

    def update(self, predictions: Any, targets: Any) -> None:
        counts = getattr(predictions, "frame_counts", None)
        if counts is None:
            return
        correct, frames = counts
        self.counts["correct"] += int(correct)  # host sync: evaluation only
        self.counts["frames"] += int(frames)

    def compute(self) -> dict[str, float]:
        frames = int(self.counts["frames"])
        return {self.name: int(self.counts["correct"]) / frames if frames else float("nan"), f"{self.name}_frames": frames}


@TASKS.register("framewise")
class FramewiseTask(CTCTask):
    """Frame-wise cross-entropy against a fixed alignment of each utterance; CTC decoding.

    Args:
        model, features, tokenizer, decoding, l2_penalty: as :class:`~cadence.tasks.ctc.CTCTask`.
        alignments: the manifest of the training utterances' alignments (read once, when first
            needed: a model rebuilt for ``cadence transcribe`` never reads it). Training without
            it is an error; the ``realign`` stage function sets it.
        valid_alignments: the same for the validation data (optional; see the module docstring).
        losses: ``framewise`` (the mean cross-entropy over every output frame of the batch)
            and ``ctc`` (the CTC loss, e.g. ``{evaluation_only: true}`` to watch it).
        normalize, zero_infinity: of the ``ctc`` loss, as in CTCTask.
    """

    available_losses = frozenset({"framewise", "ctc"})

    def __init__(
        self,
        model: nn.Module,
        features: nn.Module | None = None,
        tokenizer: Any = None,
        alignments: str | None = None,
        valid_alignments: str | None = None,
        losses: dict[str, LossTerm] = {"framewise": LossTerm()},
        normalize: CTCNormalization = "target_length",
        zero_infinity: bool = True,
        decoding: DecodingOptions = DecodingOptions(),
        l2_penalty: NonNegativeFloat = 0.0,
    ):
        super().__init__(model, features, tokenizer, losses, normalize, zero_infinity, decoding, l2_penalty)
        framewise = self.losses.get("framewise")
        if framewise is None or framewise.evaluation_only or framewise.weight == 0:
            raise ConfigError(f"task.losses: the framewise task trains the framewise loss, got {sorted(self.losses)}; "
                              "give task.losses: {framewise: {}} (and ctc: {...} to add the CTC loss)")
        refuse_duration_changes(features, "so its output frames no longer match the alignment's; remove it from the "
                                          "features of the framewise stage")
        self.alignments = alignments
        self.valid_alignments = valid_alignments
        self._tables: dict[str, dict[str, torch.Tensor]] = {}  # path -> {id: classes}, each read once

    def alignment_table(self, path: str) -> dict[str, torch.Tensor]:
        if path not in self._tables:
            self._tables[path] = read_alignments(path)
        return self._tables[path]

    def frame_targets(self, batch: Any, output_lengths: torch.Tensor, path: str, required: bool) -> torch.Tensor | None:
        """``[B, T']`` aligned classes (``PADDING`` beyond each output length). ``required``
        (training): every utterance must have an alignment; otherwise a batch with none gives
        None, and one with only some is an error."""
        table = self.alignment_table(path)
        found = [key in table for key in batch.ids]
        if not any(found) and not required:
            return None
        lengths = output_lengths.tolist()  # host sync: once per batch
        targets = torch.full((len(batch.ids), max(lengths, default=0)), PADDING, dtype=torch.int64)
        for row, (key, length) in enumerate(zip(batch.ids, lengths)):
            if key not in table:
                split = "training" if required else "evaluation"
                raise DataError(
                    f"utterance {key!r} has no alignment in {path}, though it is in this {split} data; realign this data "
                    "(the realign stage function aligns every utterance of the training and validation data), or point "
                    "the task at the alignments of this data"
                )
            alignment = table[key]
            if len(alignment) != length:
                raise DataError(f"utterance {key!r}: its alignment in {path} has {len(alignment)} frames, the model gives "
                                f"{length} output frames; {OTHER_STRIDE}")
            targets[row, :length] = alignment
        return targets.to(output_lengths.device)

    def framewise_loss(self, log_probs: torch.Tensor, targets: torch.Tensor, source: str) -> torch.Tensor:
        """Mean cross-entropy over every aligned frame of the batch (``log_probs [B, T', C]``)."""
        classes = log_probs.shape[-1]
        if int(targets.max()) >= classes:  # host sync: once per batch, next to the loss's own
            raise DataError(f"{source}: an alignment holds class {int(targets.max())}, the model has {classes} classes "
                            "(tokens + blank); the alignments were made with another tokenizer")
        frames = (targets != PADDING).sum().clamp(min=1)
        total = F.nll_loss(log_probs[:, : targets.shape[1]].transpose(1, 2), targets, ignore_index=PADDING, reduction="sum")
        return total / frames

    def loss_parts(self, batch: Any, log_probs: torch.Tensor, output_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training losses (CTCTask.training_step calls this): against ``alignments``."""
        if self.alignments is None:
            raise ConfigError(
                "task.alignments is not set: the framewise task trains against alignments; start its stage with the realign "
                "stage function (stages: [..., {function: realign}]) or give task.alignments"
            )
        targets = self.frame_targets(batch, output_lengths, self.alignments, required=True)
        parts = {"framewise": self.framewise_loss(log_probs, targets, self.alignments)}
        if "ctc" in self.losses:
            parts.update(super().loss_parts(batch, log_probs, output_lengths))
        return parts

    def loss_weight(self, batch: Any, output_lengths: torch.Tensor) -> torch.Tensor:
        """The loss is a mean over output frames: batches (accumulated, or of several
        processes) weigh the frames they hold."""
        return output_lengths.sum().to(torch.float32)

    def validation_step(self, batch: Any) -> StepOutput:
        log_probs, output_lengths = self.forward_batch(batch)
        hypotheses = self.decode(log_probs, output_lengths)
        targets = None
        if self.valid_alignments is not None:
            targets = self.frame_targets(batch, output_lengths, self.valid_alignments, required=False)
        if targets is None:
            # No alignment to score frames against: the CTC loss of the same outputs stands in.
            parts = CTCTask.loss_parts(self, batch, log_probs, output_lengths)
            output = self.evaluation_output(batch, parts, hypotheses, terms={"ctc": LossTerm()})
            output.predictions = TranscriptsWithFrames(output.predictions)
            return output
        parts = {"framewise": self.framewise_loss(log_probs, targets, self.valid_alignments)}
        if "ctc" in self.losses:
            parts.update(CTCTask.loss_parts(self, batch, log_probs, output_lengths))
        aligned = targets != PADDING
        correct = ((log_probs[:, : targets.shape[1]].argmax(dim=-1) == targets) & aligned).sum()
        output = self.evaluation_output(batch, parts, hypotheses)
        output.predictions = TranscriptsWithFrames(output.predictions, (correct, aligned.sum()))
        return output
