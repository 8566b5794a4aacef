"""Learning-rate phases and schedules of any value through a recipe, on FSDD: what they set, the
learning-rate history, exact resume, and the mistakes refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadence.commands.cli import main

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPE = str(REPOSITORY / "recipes" / "fsdd" / "digits.yaml")
SMALL = ["data.max_train_utterances=192", "data.max_eval_utterances=30", "model.channels=8", "model.layers=2",
         "trainer.progress_bar=false"]  # 6 batches of 32 an epoch
# Warmup over 8 updates, then Newbob deciding by val/loss; threshold -0.5 calls for a decay
# unless the loss fell by half, so the rate halves every epoch once Newbob has two scores.
PHASES = "scheduler={name: phases, phases: [{kind: warmup, steps: 8}, {kind: newbob, threshold: -0.5}]}"
# Curriculum (utterances up to 0.5 s in epochs 1-2), clipping in epochs 1-2, dropout rising by step.
SCHEDULES = ("schedules={data.max_duration: {epochs: {1: 0.5, 3: null}}, trainer.clip_grad_norm: {epochs: {1: 0.5, 3: null}}, "
             "dropout: {steps: [[0, 0.0], [20, 0.3]]}}")


def test_phases_and_schedules_set_what_they_say_and_the_history_is_written(tmp_path, fsdd_root):
    directory = tmp_path / "run"
    assert main(["train", RECIPE, *SMALL, "trainer.max_epochs=5", "trainer.log_every=1", PHASES, SCHEDULES, "--exp-dir", str(directory)]) == 0
    history = json.loads((directory / "learning_rates.json").read_text())
    assert history["monitor"] == "val/loss"
    epochs = history["epochs"]
    assert [record["epoch"] for record in epochs] == [1, 2, 3, 4, 5]
    # The curriculum leaves the utterances over 0.5 s out of epochs 1-2: fewer than 6 batches each.
    starts = [record["step"] for record in epochs]
    assert starts[1] < 6 and starts[2] - starts[1] < 6 and starts[3] - starts[2] == 6 and starts[4] - starts[3] == 6
    # Warmup by update, then Newbob from 3e-3: kept until two scores exist, then halved each epoch.
    assert epochs[0]["kind"] == "warmup" and epochs[0]["learning_rate"] == pytest.approx(3e-3 / 8)
    newbob = [record for record in epochs if record["kind"] == "newbob"]
    assert [record["decision"]["action"] for record in newbob][-2:] == ["decay", "decay"]
    assert newbob[-1]["learning_rate"] == pytest.approx(newbob[-2]["learning_rate"] / 2)
    assert all(isinstance(record["score"], float) for record in epochs)
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    train = {line["step"]: line for line in lines if line["split"] == "train"}
    assert train[10]["train/schedule/dropout"] == pytest.approx(0.3 * 9 / 20)  # logged after update 10, set before it (step 9)
    assert train[10]["train/lr"] == pytest.approx(3e-3)
    clipping = [line.get("train/schedule/trainer.clip_grad_norm") for line in lines if line["split"] == "epoch"]
    assert clipping[:2] == [0.5, 0.5] and clipping[2:] == [None, None, None]  # null (no clipping) is not logged


def test_resume_inside_newbob_with_curriculum_dropout_and_clipping_schedules_is_bit_identical(fsdd_root, capsys):
    # Epoch 1 takes updates 0-4 (the curriculum leaves 47 long utterances out), epoch 2 takes 5-9: the run
    # stops inside the curriculum and the warmup, and goes on through Newbob's decisions.
    assert_resume_is_bit_identical([*SMALL, PHASES, SCHEDULES, "--steps", "26", "--interrupt-at", "7"], capsys)


def assert_resume_is_bit_identical(arguments: list[str], capsys) -> None:
    """`cadence verify-resume` of the digits recipe with ``arguments``: its report says identical."""
    assert main(["verify-resume", RECIPE, *arguments]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.rindex('{\n  "recipe"'):])
    assert report["identical"] and report["tensors_compared"] > 0 and report["differences"] == []


@pytest.mark.parametrize("override, message", [
    ("schedules={dropot: {epochs: {1: 0.1}}}", "schedules.dropot: a scheduled setting is dropout or starts with"),
    ("schedules={model.widht: {epochs: {1: 3}}}", "schedules.model.widht: CNNClassifier has no attribute 'widht'"),
    ("schedules={data.max_duration: {steps: [[0, 1.0]]}}", "schedules.data.max_duration: batching is planned once per epoch"),
    ("schedules={trainer.max_epochs: {epochs: {1: 3}}}", "schedules.trainer.max_epochs: the trainer's scheduled settings are"),
    ("schedules={dropout: {epochs: {2: 0.1}}}", "schedules.dropout: value error, epochs must give the value of epoch 1"),
    ("scheduler={name: phases, phases: [{kind: newbob}]}", "scheduler.monitor: 'val/wer' is never among the validation results"),
])
def test_schedule_mistakes_are_refused_naming_the_key(override, message, tmp_path, fsdd_root, capsys):
    extra = ["scheduler.monitor=val/wer"] if "newbob" in override else []
    assert main(["train", RECIPE, *SMALL, override, *extra, "--exp-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert message in error, error
    assert not (tmp_path / "run").exists()


# The convolutions by Adam with warmup then Newbob, the head by SGD halved every epoch (PASE+'s shape).
PER_MODULE = ["optimizer={name: per_module, modules: {body: {params: [convolutions.*, norms.*], name: adam, lr: 3.0e-3}, "
              "head: {params: head.*, name: sgd, lr: 0.05}}}",
              "scheduler={name: per_module, modules: {body: {name: phases, phases: [{kind: warmup, steps: 8}, "
              "{kind: newbob, threshold: -0.5}]}, head: {name: exponential, gamma: 0.5}}}"]


def test_one_optimizer_per_module_each_with_its_schedule(tmp_path, fsdd_root):
    directory = tmp_path / "run"
    assert main(["train", RECIPE, *SMALL, "trainer.max_epochs=3", "trainer.log_every=1", *PER_MODULE, "--exp-dir", str(directory)]) == 0
    history = json.loads((directory / "learning_rates.json").read_text())
    assert list(history["modules"]) == ["body"] and [record["kind"] for record in history["modules"]["body"]] == ["warmup", "warmup", "newbob"]
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    train = {line["step"]: line for line in lines if line["split"] == "train"}
    rates = [value for key, value in sorted(train[2].items()) if key.startswith("train/lr/group")]
    assert rates == pytest.approx([3e-3 * 2 / 8, 0.05])  # body (warming up by update), head
    last = [value for key, value in sorted(train[max(train)].items()) if key.startswith("train/lr/group")]
    assert last[1] == pytest.approx(0.05 / 4)  # halved at each of two epochs' ends


def test_resume_with_one_optimizer_per_module_is_bit_identical(fsdd_root, capsys):
    assert_resume_is_bit_identical([*SMALL, *PER_MODULE, "--steps", "14", "--interrupt-at", "9"], capsys)


@pytest.mark.parametrize("override, message", [
    ("optimizer={name: per_module, modules: {body: {params: 'convolutions.*', name: adam}}}", "no module takes 6 trainable parameter(s)"),
    ("optimizer={name: per_module, modules: {all: {params: '*', name: adam, lrr: 0.1}}}", "optimizer.modules.all: value error, lrr: extra inputs are not permitted"),
])
def test_per_module_mistakes_are_refused_before_the_run_starts(override, message, tmp_path, fsdd_root, capsys):
    assert main(["train", RECIPE, *SMALL, override, "--exp-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert message in error, error
    assert not (tmp_path / "run").exists()
