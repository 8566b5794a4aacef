"""`cadence resume`, `cadence verify-resume`, `cadence.load` and `cadence.trainer_from_checkpoint`
through the recipe path on FSDD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cadence
from cadence import Trainer
from cadence.checkpoint.format import load_checkpoint
from cadence.commands.cli import main
from cadence.commands.train import config_diff

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPE = str(REPOSITORY / "recipes" / "fsdd" / "digits.yaml")
SMALL = ["data.max_train_utterances=192", "data.max_eval_utterances=30", "model.channels=8", "model.layers=2",
         "trainer.progress_bar=false"]  # 6 batches an epoch


@pytest.fixture
def stopped_run(tmp_path, fsdd_root):
    directory = tmp_path / "run"
    assert main(["train", RECIPE, *SMALL, "trainer.max_steps=4", "--exp-dir", str(directory)]) == 0
    return directory


def test_resume_continues_in_the_same_folder_and_records_it(stopped_run, capsys):
    assert main(["resume", str(stopped_run), "trainer.max_steps=9"]) == 0
    results = json.loads((stopped_run / "results.json").read_text())
    assert results["global_step"] == 9 and results["epochs_completed"] == 1
    provenance = json.loads((stopped_run / "provenance.json").read_text())
    (resume,) = provenance["resumes"]
    assert resume["exact"] and resume["changes"] == [{"key": "trainer.max_steps", "saved": 4, "new": 9}]
    assert resume["checkpoint"].endswith("step-000000004")
    assert "resuming experiment" in (stopped_run / "train.log").read_text()


def test_resume_refuses_changes_that_break_exactness(stopped_run, capsys):
    assert main(["resume", str(stopped_run), "optimizer.lr=0.1"]) == 2
    error = capsys.readouterr().err
    assert "optimizer.lr: 0.003 -> 0.1" in error and "--allow-config-change" in error
    assert main(["resume", str(stopped_run), "optimizer.lr=0.1", "trainer.max_steps=6", "--allow-config-change"]) == 0
    (resume,) = json.loads((stopped_run / "provenance.json").read_text())["resumes"]
    assert not resume["exact"]


def test_resume_refuses_a_config_with_a_python_tag(stopped_run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = stopped_run / "config.yaml"
    config.write_text(config.read_text() + f"\nevil: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["resume", str(stopped_run)]) == 2
    assert "invalid YAML" in capsys.readouterr().err and not marker.exists()


def test_resume_from_a_chosen_checkpoint(stopped_run):
    checkpoint = stopped_run / "checkpoints" / "step-000000004"
    assert main(["resume", str(stopped_run), "trainer.max_steps=5", "--from", str(checkpoint)]) == 0
    assert json.loads((stopped_run / "results.json").read_text())["global_step"] == 5


def test_verify_resume_reports_bit_identical_runs(fsdd_root, capsys):
    assert main(["verify-resume", RECIPE, *SMALL, "--steps", "9", "--interrupt-at", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identical"] and report["tensors_compared"] > 20 and report["differences"] == []


def test_load_gives_the_trained_model_for_inference(stopped_run):
    task = cadence.load(stopped_run)
    assert not task.training and task.config["name"] == "fsdd-digits"
    state, _ = load_checkpoint(stopped_run / "checkpoints" / "step-000000004")
    for key, value in task.state_dict().items():
        assert torch.equal(value, state["task"][key]), key
    waveforms = torch.randn(2, 4000) * 0.1
    logits = task.model(*task.features(waveforms, torch.tensor([4000, 3000])))
    assert logits.shape == (2, 10)


def test_trainer_from_checkpoint_continues_training(stopped_run):
    trainer = cadence.trainer_from_checkpoint(stopped_run)
    trainer.max_steps = 7
    results = trainer.fit()
    assert results["global_step"] == 7 and trainer.train_loader.cursor == 1


def test_config_diff_names_every_changed_leaf():
    saved = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    assert config_diff(saved, {"a": {"b": 2, "c": [1, 3]}, "d": "x", "e": 5}) == [("a.b", 1, 2), ("a.c.1", 2, 3), ("e", None, 5)]


def test_resume_compares_with_the_checkpoints_own_config(stopped_run, capsys):
    assert main(["resume", str(stopped_run), "trainer.max_steps=6", "optimizer.lr=0.01", "checkpoint.keep_last=5",
                 "--allow-config-change"]) == 0
    earlier = stopped_run / "checkpoints" / "step-000000004"
    # config.yaml now says lr 0.01; resuming the step-4 checkpoint (lr 0.003) with lr 0.01 is a change.
    assert main(["resume", str(stopped_run), "optimizer.lr=0.01", "--from", str(earlier)]) == 2
    assert "optimizer.lr: 0.003 -> 0.01" in capsys.readouterr().err
