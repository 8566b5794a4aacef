"""Tiny real trainings on FSDD through the recipe path, checking the experiment folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from cadence.checkpoint.format import load_checkpoint, verify_checkpoint
from cadence.commands.train import train_recipe
from cadence.run_status import read_status

REPOSITORY = Path(__file__).resolve().parents[2]
QUICK = ["data.max_train_utterances=240", "data.max_eval_utterances=60", "trainer.max_epochs=2", "trainer.progress_bar=false"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    if not (REPOSITORY.parent / "shared" / "data" / "fsdd" / "recordings").is_dir():
        pytest.skip("FSDD is not beside the checkout")
    directory = tmp_path_factory.mktemp("runs") / "digits"
    results = train_recipe(REPOSITORY / "recipes" / "fsdd" / "digits.yaml", QUICK, exp_dir=directory)
    return directory, results


def test_fit_writes_a_complete_experiment_folder(digits_run):
    directory, results = digits_run
    for name in ("config.yaml", "config.sha256", "provenance.json", "train.log", "metrics.jsonl", "results.json", "code/digits.yaml"):
        assert (directory / name).is_file(), name
    assert list((directory / "tensorboard").glob("events.out.tfevents.*"))
    on_disk = json.loads((directory / "results.json").read_text())
    assert on_disk["test"] == results["test"] and 0.0 <= on_disk["test"]["test/accuracy"] <= 1.0
    assert on_disk["epochs_completed"] == 2 and len(on_disk["history"]) == 2
    confusion = on_disk["test_reports"]["ConfusionMatrix"]
    assert len(confusion["classes"]) == 10 and sum(map(sum, confusion["matrix"])) == 60  # every test utterance counted
    config = yaml.safe_load((directory / "config.yaml").read_text())
    assert config["model"]["num_classes"] == 10  # filled from the data
    assert (directory / "config.sha256").read_text().strip() == on_disk["config_sha256"]
    status = read_status(directory)  # what cadence ls shows: finished, and the lock given back
    assert status["status"] == "finished" and status["pid"] == os.getpid() and status["ended"] >= status["started"]


def test_provenance_records_code_versions_and_data(digits_run):
    directory, _ = digits_run
    provenance = json.loads((directory / "provenance.json").read_text())
    assert provenance["packages"]["torch"] and provenance["python"]
    assert set(provenance["data"]) == {"train", "valid", "test"}
    assert all(len(entry["sha256"]) == 64 for entry in provenance["data"].values())
    assert "commit" in provenance["git"]["cadence"] or provenance["git"]["cadence"]["repository"] is None


def test_metrics_jsonl_has_every_split_and_losses(digits_run):
    directory, _ = digits_run
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    splits = {record["split"] for record in records}
    assert {"epoch", "test"} <= splits
    epoch_records = [record for record in records if record["split"] == "epoch"]
    assert [record["epoch"] for record in epoch_records] == [0, 1]
    assert all("train/loss" in record and "val/accuracy" in record and "train/lr" in record for record in epoch_records)


def test_final_checkpoint_is_valid_and_holds_the_best_model(digits_run):
    directory, results = digits_run
    final = Path(results["final_checkpoint"])
    verify_checkpoint(final)
    state, metadata = load_checkpoint(final)
    assert metadata["global_step"] == state["trainer_state"]["global_step"]
    assert state["config"]["name"] == "fsdd-digits"
    assert any(key.startswith("model.") for key in state["task"])


def test_log_file_has_no_duplicated_lines(digits_run):
    directory, _ = digits_run
    lines = (directory / "train.log").read_text().splitlines()
    epoch_lines = [line for line in lines if " epoch 1/" in line]
    assert len(epoch_lines) == 1


def test_tensorboard_holds_the_curves_of_the_real_fit(digits_run):
    """The curves a user opens in TensorBoard: the same values as metrics.jsonl, at the same steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    directory, results = digits_run
    events = EventAccumulator(str(directory / "tensorboard"))
    events.Reload()
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    for tag in ("train/loss", "train/lr", "val/loss", "val/accuracy"):
        logged = [(line["step"], line[tag]) for line in lines if line.get(tag) is not None]
        curve = [(event.step, event.value) for event in events.Scalars(tag)]
        assert logged and [step for step, _ in curve] == [step for step, _ in logged], tag
        assert [value for _, value in curve] == pytest.approx([value for _, value in logged], rel=1e-6), tag  # float32 there
    assert [event.value for event in events.Scalars("val/accuracy")] == pytest.approx(
        [entry["val/accuracy"] for entry in results["history"]], rel=1e-6)
