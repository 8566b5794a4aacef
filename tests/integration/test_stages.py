"""Stages through recipes on FSDD: a model grown between stages, exact resume inside a stage
and at a boundary, a stage function called once, and stage mistakes refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cadence
from cadence.checkpoint.format import load_checkpoint
from cadence.commands.cli import main
from cadence.registry import STAGE_FUNCTIONS

REPOSITORY = Path(__file__).resolve().parents[2]
DIGITS = str(REPOSITORY / "recipes" / "fsdd" / "digits.yaml")
DS2 = str(REPOSITORY / "recipes" / "fsdd" / "asr_ds2.yaml")
SMALL = ["data.max_train_utterances=192", "data.max_eval_utterances=30", "model.channels=8", "model.layers=2",
         "trainer.progress_bar=false"]
# Everything at once (the list): warmup then Newbob, dropout by step, clipping and a
# curriculum by epoch, and a second stage from epoch 3 with a wider model and another loss.
# Epochs 1-2 take 5 updates each (the curriculum leaves long utterances out), epoch 3 six.
EVERYTHING = [
    "scheduler={name: phases, phases: [{kind: warmup, steps: 8}, {kind: newbob, threshold: -0.5}]}",
    "schedules={data.max_duration: {epochs: {1: 0.5, 3: null}}, trainer.clip_grad_norm: {epochs: {1: 0.5, 3: null}}, "
    "dropout: {steps: [[0, 0.0], [20, 0.3]]}}",
    "stages=[{epochs: 2}, {overrides: {model.channels: 12, task.label_smoothing: 0.0}}]",
]


@pytest.mark.parametrize("interrupt_at", [12, 10], ids=["inside the second stage", "at the boundary"])
def test_resume_with_stages_and_every_schedule_is_bit_identical(interrupt_at, fsdd_root, capsys):
    assert main(["verify-resume", DIGITS, *SMALL, *EVERYTHING, "--steps", "20", "--interrupt-at", str(interrupt_at)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.rindex('{\n  "recipe"'):])
    assert report["identical"] and report["differences"] == []


def test_deepspeech2_grows_from_one_to_three_layers_and_the_best_stage_is_restored(tmp_path, fsdd_root):
    directory = tmp_path / "run"
    # The shipped recipe (3 layers of 192, growing from 1 layer), smaller: 3 layers of 48 from 1 layer of 32.
    arguments = [str(REPOSITORY / "recipes" / "fsdd" / "asr_ds2_stages.yaml"), "data.max_train_utterances=48",
                 "data.max_eval_utterances=10", "trainer.progress_bar=false", "trainer.max_epochs=3", "model.rnn_hidden=48",
                 "stages.0.overrides={model.rnn_layers: 1, model.rnn_hidden: 32}", "--exp-dir", str(directory)]
    assert main(["train", *arguments]) == 0
    log = (directory / "train.log").read_text()
    # Stage 2: one layer grown to 48 units gate by gate (GRU: 3 x 32 rows -> 3 x 48), two new layers.
    assert "stage 2 of 3 starts at epoch 2" in log and "recurrent_layers.0.weight_hh_l0 (96, 32) -> (144, 48)" in log
    assert "new: model.recurrent_layers.1.weight_ih_l0" in log
    assert "stage 3 of 3 starts at epoch 3: 35 copied, 0 grown, 13 new" in log  # the third layer and its norm
    checkpoints = sorted((directory / "checkpoints").iterdir())
    stages_saved = [load_checkpoint(path)[0]["stages"]["index"] for path in checkpoints]
    assert stages_saved == sorted(stages_saved) and stages_saved[-1] == 2
    # Every checkpoint rebuilds as the model of its own stage.
    for path, index in zip(checkpoints, stages_saved):
        task = cadence.load(path)
        assert task.model.recurrent_layers[0].hidden_size == (32 if index == 0 else 48)
    results = json.loads((directory / "results.json").read_text())
    best = cadence.load(directory)  # the best checkpoint: the model fit() restored and tested
    assert results["best_epoch"] in (1, 2, 3)
    assert best.model.recurrent_layers[0].hidden_size == (32 if results["best_epoch"] == 1 else 48)


def test_a_stage_function_is_called_once_and_its_overrides_travel_with_the_checkpoints(tmp_path, fsdd_root, capsys):
    calls = []

    @STAGE_FUNCTIONS.register("test_smoothing_off")
    def smoothing_off(epoch, trainer):
        calls.append((epoch, trainer.state.global_step))
        return {"task.label_smoothing": 0.0}

    directory = tmp_path / "run"
    stages = "stages=[{epochs: 1}, {function: test_smoothing_off}]"
    assert main(["train", DIGITS, *SMALL, "trainer.max_epochs=2", "trainer.max_steps=8", stages, "--exp-dir", str(directory)]) == 0
    assert calls == [(2, 6)]
    saved = load_checkpoint(directory / "checkpoints" / "step-000000008")[0]["stages"]
    assert saved == {"index": 1, "function_overrides": {"1": {"task.label_smoothing": 0.0}}}
    assert main(["resume", str(directory), "trainer.max_steps=10"]) == 0
    assert calls == [(2, 6)]  # resumed inside the stage: the saved overrides, no second call
    assert cadence.load(directory / "checkpoints" / "step-000000010").label_smoothing == 0.0
    assert main(["resume", str(directory), "stages.0.epochs=2", "trainer.max_steps=12"]) == 2  # another stage list
    assert "stages.0.epochs: 1 -> 2" in capsys.readouterr().err


@pytest.mark.parametrize("stages, message", [
    ("[{epochs: 1, overrides: {data.max_train_utterances: 10}}, {}]", "stages.0.overrides.data.max_train_utterances: a stage may override"),
    ("[{epochs: 40}, {}]", "stages.1: starts at epoch 41, after trainer.max_epochs=30"),
    ("[{}, {}]", "stages.0.epochs: only the last stage may leave out its epochs"),
    ("[{epochs: 1}, {overrides: {model.chanels: 4}}]", "stages.1: model.chanels: unknown key (did you mean 'channels'?)"),
    ("[{epochs: 1}, {function: nowhere}]", "stages.1.function: unknown stage function 'nowhere'"),
])
def test_stage_mistakes_are_refused_before_training(stages, message, tmp_path, fsdd_root, capsys):
    assert main(["train", DIGITS, *SMALL, f"stages={stages}", "--exp-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert message in error, error
    assert not (tmp_path / "run").exists()



def test_las_trains_ctc_first_then_joint(tmp_path, fsdd_root):
    directory = tmp_path / "run"
    tiny = ["data.max_train_utterances=32", "data.max_eval_utterances=8", "trainer.progress_bar=false",
            "trainer.max_epochs=2", "stages.0.epochs=1"]
    assert main(["train", str(REPOSITORY / "recipes" / "fsdd" / "asr_las_ctc_first.yaml"), *tiny, "--exp-dir", str(directory)]) == 0
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    epochs = [line for line in lines if line["split"] == "epoch"]
    # Epoch 1 trains CTC alone (the training loss is the CTC loss); epoch 2 the joint loss.
    assert epochs[0]["train/loss"] == pytest.approx(epochs[0]["train/loss_ctc"])
    assert epochs[1]["train/loss"] == pytest.approx(0.7 * epochs[1]["train/loss_attention"] + 0.3 * epochs[1]["train/loss_ctc"])
