"""RETURNN's realignment pipeline on FSDD connected digits (recipes/fsdd/asr_ds2_realign.yaml,
tiny): CTC for an epoch, realign and train frame-wise, realign again and train again. The
alignment manifests are valid CTC paths of the transcripts, the frame-wise stages report
frame accuracy and WER, and a run interrupted inside a frame-wise stage resumes exactly,
without realigning again."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cadence.checkpoint.format import load_checkpoint
from cadence.commands.cli import main
from cadence.commands.verify import COMPARED, differences, within_run
from cadence.data.manifest import read_manifest
from cadence.data.tokenizers import tokenizer_from_dict
from cadence.errors import ConfigError
from cadence.realignment import realign

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "fsdd" / "asr_ds2_realign.yaml")
# The shipped recipe, tiny: 32 training and 8 validation utterances (of the corpus the ASR tests
# generate once), a DeepSpeech2 of 1 GRU layer of 24 units, one epoch per stage.
TINY = ["data.corpus_sizes=[60,12,12]", "data.max_train_utterances=32", "data.max_eval_utterances=8",
        "model.rnn_hidden=24", "model.rnn_layers=1", "model.conv_channels=4", "trainer.max_epochs=3",
        "stages.0.epochs=1", "stages.1.epochs=1", "trainer.progress_bar=false"]
SPLITS = {"train": 32, "valid": 8}


def epoch_lines(directory: Path) -> list[dict]:
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["split"] == "epoch"]


def realign_calls(directory: Path) -> int:
    return (directory / "train.log").read_text().count("INFO realign: aligned")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, fsdd_root) -> Path:
    directory = tmp_path_factory.mktemp("realign") / "straight"
    assert main(["train", RECIPE, *TINY, "--exp-dir", str(directory)]) == 0
    return directory


def test_every_alignment_is_a_ctc_path_of_its_transcript(straight):
    tokenizer = tokenizer_from_dict(json.loads((straight / "data" / "tokenizer.json").read_text()))
    assert sorted(path.name for path in (straight / "alignments").iterdir()) == [
        "epoch-2-train.jsonl", "epoch-2-valid.jsonl", "epoch-3-train.jsonl", "epoch-3-valid.jsonl"]
    for epoch, (split, count) in itertools.product((2, 3), SPLITS.items()):
        entries = read_manifest(straight / "alignments" / f"epoch-{epoch}-{split}.jsonl")
        assert len(entries) == count and all(entry.audio.is_file() for entry in entries)
        for entry in entries:
            collapsed = [cls - 1 for cls, _ in itertools.groupby(entry.alignment) if cls != 0]  # merge repeats, drop blanks
            assert collapsed == tokenizer.encode(entry.text), entry.id
            # One class per output frame: 1 + samples // 80 feature frames (8 kHz, 10 ms hop), 4 to an output frame.
            assert len(entry.alignment) == -(-(1 + round(entry.duration * 8000) // 80) // 4), entry.id
    assert realign_calls(straight) == 2


def test_the_frame_wise_stages_report_frame_accuracy_and_wer(straight):
    epochs = epoch_lines(straight)
    assert len(epochs) == 3
    assert epochs[0]["val/frame_accuracy"] is None and epochs[0]["val/frame_accuracy_frames"] == 0  # CTC: NaN
    assert epochs[0]["train/loss"] == pytest.approx(epochs[0]["train/loss_ctc"])
    for line in epochs[1:]:
        assert 0.0 <= line["val/frame_accuracy"] <= 1.0 and line["val/frame_accuracy_frames"] > 8
        assert line["train/loss"] == pytest.approx(line["train/loss_framewise"])
        assert line["val/wer_reference_words"] > 8 and 0.0 <= line["val/wer"]
    stage = load_checkpoint(sorted((straight / "checkpoints").glob("step-*"))[-1])[0]["stages"]
    assert stage["index"] == 2 and stage["function_overrides"]["2"] == {
        "task.name": "framewise", "task.alignments": str(straight / "alignments" / "epoch-3-train.jsonl"),
        "task.valid_alignments": str(straight / "alignments" / "epoch-3-valid.jsonl")}


def test_a_run_resumed_inside_a_frame_wise_stage_uses_the_saved_alignments_and_is_exact(straight, tmp_path):
    final = sorted((straight / "checkpoints").glob("step-*"))[-1]
    steps = load_checkpoint(final)[0]["trainer_state"]["global_step"]
    first_epoch_steps = steps // 3  # equal epochs: the same utterances, the same frame budget
    directory = tmp_path / "interrupted"
    assert main(["train", RECIPE, *TINY, f"trainer.max_steps={first_epoch_steps + 1}", "--exp-dir", str(directory)]) == 0
    assert realign_calls(directory) == 1  # stopped inside stage 2, after one realignment
    assert main(["resume", str(directory), f"trainer.max_steps={steps}"]) == 0
    assert realign_calls(directory) == 2  # stage 3's; stage 2's overrides came from the checkpoint
    for name in ("epoch-2-train.jsonl", "epoch-3-train.jsonl", "epoch-3-valid.jsonl"):
        assert read_manifest(directory / "alignments" / name) == read_manifest(straight / "alignments" / name)
    first, second = (load_checkpoint(folder / "checkpoints" / final.name)[0] for folder in (straight, directory))
    # Bit-identical, each run's alignments compared relative to its own folder (as verify-resume does).
    compared, differing = differences(within_run({key: first[key] for key in COMPARED}, straight),
                                      within_run({key: second[key] for key in COMPARED}, directory))
    assert compared > 20 and differing == []


def test_realign_needs_a_run_folder():
    trainer = SimpleNamespace(experiment=None, task=None, train_loader=None, val_data=None)
    with pytest.raises(ConfigError, match="realign writes its alignment manifests into the run folder"):
        realign(2, trainer)
