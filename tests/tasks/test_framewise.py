"""FramewiseTask: frame-wise cross-entropy against alignments read from a manifest, worked
out by hand; clear errors for alignments that do not fit; frame accuracy in validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from cadence.data.dataset import Batch
from cadence.data.tokenizers import WordTokenizer
from cadence.errors import ConfigError, DataError
from cadence.evaluation import evaluate
from cadence.losses import LossTerm
from cadence.metrics import WordErrorRate
from cadence.tasks.framewise import FrameAccuracy, FramewiseTask

TOKENIZER = WordTokenizer.from_texts(["one two"])  # one -> 0, two -> 1: classes blank 0, one 1, two 2


class LogitsAreInputs(nn.Module):
    """A 'model' whose logits are its input features ``[B, C, T]``: the test chooses the outputs."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # something to train

    def forward(self, features, lengths):
        return (features * self.scale).transpose(1, 2), lengths  # [B, T, C]


# Utterance u1: 3 output frames, u2: 2 (its third column is padding).
LOGITS = torch.tensor([
    [[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]],    # u1: columns are frames; best classes 0, 1, 0
    [[0.5, 1.0, 9.0], [0.0, 0.0, 9.0], [2.0, -1.0, 9.0]],   # u2: best classes 2, 0
])  # [B=2, C=3, T=3]


def batch(ids=("u1", "u2"), lengths=(3, 2)) -> Batch:
    targets = torch.tensor([[0, 0], [1, 0]])  # u1 "one two", u2 "two"
    return Batch(LOGITS.clone(), torch.tensor(lengths), targets, torch.tensor([2, 1]), list(ids), ["s", "s"])


def manifest(path: Path, alignments: dict[str, list[int] | None]) -> str:
    lines = [json.dumps({"id": key, "audio": f"{key}.wav", "duration": 1.0, **({"alignment": value} if value else {})})
             for key, value in alignments.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def by_hand(columns: list[list[float]], classes: list[int]) -> list[float]:
    """-log softmax(column)[class] of each frame, from the formula."""
    return [math.log(sum(math.exp(value) for value in column)) - column[target] for column, target in zip(columns, classes)]


def test_the_loss_is_the_mean_frame_cross_entropy_worked_out_by_hand(tmp_path):
    path = manifest(tmp_path / "train.jsonl", {"u1": [1, 0, 2], "u2": [0, 2], "unused": [1]})
    task = FramewiseTask(LogitsAreInputs(), tokenizer=TOKENIZER, alignments=path)
    output = task.training_step(batch())
    frames_u1 = [[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]]  # frame t of u1 = column t of LOGITS[0]
    frames_u1 = [list(column) for column in zip(*frames_u1)]
    frames_u2 = [list(column) for column in zip(*[[0.5, 1.0], [0.0, 0.0], [2.0, -1.0]])]
    expected = sum(by_hand(frames_u1, [1, 0, 2]) + by_hand(frames_u2, [0, 2])) / 5
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)
    assert output.losses["framewise"].item() == pytest.approx(expected, rel=1e-6)
    assert output.weight.item() == 5  # a mean over 5 frames: accumulation and processes weigh frames
    output.loss.backward()
    assert task.model.scale.grad is not None
    # The CTC loss may ride along (evaluation only here): reported, not trained.
    both = FramewiseTask(LogitsAreInputs(), tokenizer=TOKENIZER, alignments=path,
                         losses={"framewise": LossTerm(), "ctc": LossTerm(evaluation_only=True)}).training_step(batch())
    assert both.loss.item() == pytest.approx(expected, rel=1e-6) and both.losses["ctc"].item() > 0


def test_alignments_that_do_not_fit_are_clear_errors(tmp_path):
    stride = manifest(tmp_path / "stride.jsonl", {"u1": [1, 0, 2, 0, 0, 0], "u2": [0, 2]})
    with pytest.raises(DataError, match=r"utterance 'u1': its alignment in .*stride\.jsonl has 6 frames, the model gives "
                                        r"3 output frames; .*time stride"):
        FramewiseTask(LogitsAreInputs(), tokenizer=TOKENIZER, alignments=stride).training_step(batch())
    missing = manifest(tmp_path / "missing.jsonl", {"u1": [1, 0, 2], "u2": None})
    with pytest.raises(DataError, match=r"utterance 'u2' has no alignment in .*missing\.jsonl"):
        FramewiseTask(LogitsAreInputs(), tokenizer=TOKENIZER, alignments=missing).training_step(batch())
    with pytest.raises(ConfigError, match="task.alignments is not set.*realign"):
        FramewiseTask(LogitsAreInputs(), tokenizer=TOKENIZER).training_step(batch())
    # Losses without the framewise one: refused, with the fix.
    with pytest.raises(ConfigError, match=r"trains the framewise loss, got \['ctc'\].*task.losses: \{framewise: \{\}\}"):
        FramewiseTask(LogitsAreInputs(), tokenizer=TOKENIZER, alignments=missing, losses={"ctc": LossTerm()})
    other_vocabulary = manifest(tmp_path / "classes.jsonl", {"u1": [1, 0, 7], "u2": [0, 2]})
    with pytest.raises(DataError, match="holds class 7, the model has 3 classes"):
        FramewiseTask(LogitsAreInputs(), tokenizer=TOKENIZER, alignments=other_vocabulary).training_step(batch())
    (tmp_path / "broken.jsonl").write_text('{"id": "u1", "alignment": [1, -2]}\n')
    with pytest.raises(DataError, match=r"broken\.jsonl:1: field 'alignment'"):
        FramewiseTask(LogitsAreInputs(), tokenizer=TOKENIZER, alignments=str(tmp_path / "broken.jsonl")).training_step(batch())


def test_validation_reports_frame_accuracy_against_the_validation_alignments(tmp_path):
    # Best classes: u1 0, 1, 0 and u2 2, 0. Aligned: u1 0, 1, 2 (2 right) and u2 2, 1 (1 right): 3 of 5.
    valid = manifest(tmp_path / "valid.jsonl", {"u1": [0, 1, 2], "u2": [2, 1]})
    task = FramewiseTask(LogitsAreInputs(), tokenizer=TOKENIZER, alignments="/nowhere.jsonl", valid_alignments=valid)
    evaluation = evaluate(task, [batch()], "val", [FrameAccuracy(), WordErrorRate()], torch.device("cpu"))
    assert evaluation.metrics["val/frame_accuracy"] == pytest.approx(3 / 5)
    assert evaluation.metrics["val/frame_accuracy_frames"] == 5
    # Greedy CTC decoding: u1 "0 1 0" -> "one" (reference "one two": 1 deletion); u2 "2 0" -> "two": 1 of 3 words.
    assert evaluation.metrics["val/wer"] == pytest.approx(1 / 3)
    assert [record["hypothesis"] for record in evaluation.records] == ["one", "two"]
    assert math.isfinite(evaluation.metrics["val/loss_framewise"])
    # Data with no alignment (a test split): WER as usual, no frame-wise figures.
    unaligned = evaluate(task, [batch(ids=("t1", "t2"))], "test", [FrameAccuracy(), WordErrorRate()], torch.device("cpu"))
    assert math.isnan(unaligned.metrics["test/frame_accuracy"]) and unaligned.metrics["test/frame_accuracy_frames"] == 0
    assert unaligned.metrics["test/wer"] == pytest.approx(1 / 3) and "test/loss_framewise" not in unaligned.metrics
    # ... and its loss is the CTC loss of the same outputs (finite: the trainer stops on a NaN validation loss).
    assert unaligned.metrics["test/loss"] == pytest.approx(unaligned.metrics["test/loss_ctc"]) and unaligned.metrics["test/loss"] > 0
    ctc_only = FramewiseTask(LogitsAreInputs(), tokenizer=TOKENIZER, alignments="/nowhere.jsonl")  # no valid_alignments
    assert math.isfinite(evaluate(ctc_only, [batch()], "val", [], torch.device("cpu")).metrics["val/loss"])
    # Some of a batch aligned, some not: the manifest does not match the data.
    with pytest.raises(DataError, match="utterance 't2' has no alignment in .*valid.jsonl"):
        task.validation_step(batch(ids=("u1", "t2")))
