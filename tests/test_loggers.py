"""Experiment trackers (``experiment.loggers``): the CSV file, and MLflow against a real local
store (SQLite in the test's folder), each through a crash and a resume."""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient  # the mlflow extra, part of the test extra
from torch import nn
from torch.utils.data import DataLoader

from cadence import Callback, ClassificationTask, Experiment, Trainer
from cadence.commands.cli import main
from cadence.loggers import CSVLogger, MetricLogger, MLflowLogger
from cadence.metrics import Accuracy


def make_trainer(experiment, **options) -> Trainer:
    torch.manual_seed(0)
    task = ClassificationTask(nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2), nn.Linear(16, 3)))
    return Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), metrics=[Accuracy(num_classes=3)], progress_bar=False,
                   experiment=experiment, log_every=2, **options)


def shuffled(loader) -> DataLoader:
    return DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=True)


class CrashAt(Callback):
    """A crash at ``step``: the lines logged since the last checkpoint (the end of epoch 1, step
    6) are what a resumed run logs again."""

    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, trainer, output):
        if trainer.state.global_step == self.step:
            raise RuntimeError("the machine went away")


def crash(folder: Path, loaders, loggers) -> None:
    """Train 3 epochs into ``folder`` (6 updates each), crashing at step 10."""
    train, valid = loaders
    with Experiment(folder, tensorboard=False, loggers=loggers) as experiment:
        with pytest.raises(RuntimeError, match="went away"):
            make_trainer(experiment, max_epochs=3, callbacks=[CrashAt(10)]).fit(shuffled(train), valid)


def resume(folder: Path, loaders, loggers) -> None:
    train, valid = loaders
    with Experiment(folder, tensorboard=False, loggers=loggers) as experiment:
        make_trainer(experiment, max_epochs=3).fit(shuffled(train), valid, test_data=valid, resume_from=folder)


def jsonl_points(folder: Path) -> collections.Counter:
    """Every (name, step) that metrics.jsonl holds, with how often."""
    points = collections.Counter()
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        points.update((name, record["step"]) for name in record if name not in ("step", "epoch", "split", "time"))
    return points


def test_the_csv_file_holds_every_logged_value_once_through_a_crash_and_a_resume(loaders, tmp_path):
    crash(tmp_path, loaders, [CSVLogger()])
    resume(tmp_path, loaders, [CSVLogger()])
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert collections.Counter((row["name"], int(row["step"])) for row in rows) == jsonl_points(tmp_path)
    assert {row["split"] for row in rows} == {"train", "epoch", "test"}
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert float(next(row for row in rows if row["name"] == "test/loss")["value"]) == last["test/loss"]


def test_a_csv_file_name_that_leaves_the_folder_is_refused():
    with pytest.raises(ValueError, match="plain file name"):
        CSVLogger(file="../elsewhere.csv")


def test_mlflow_gets_params_metrics_with_steps_and_artifacts_and_a_resumed_run_goes_on_in_the_same_run(loaders, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    folder = tmp_path / "run"
    client = MlflowClient(tracking_uri=uri)
    crash(folder, loaders, [MLflowLogger(tracking_uri=uri, experiment_name="tiny")])
    [crashed] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert crashed.info.status == "FAILED"
    assert [point.step for point in client.get_metric_history(crashed.info.run_id, "train/loss")] == [2, 4, 6, 6, 8, 10]
    resume(folder, loaders, [MLflowLogger(tracking_uri=uri, experiment_name="tiny")])
    [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])  # one run, resumed
    assert run.info.run_id == json.loads((folder / "mlflow_run.json").read_text())["run_id"]
    assert run.info.status == "FINISHED"
    # Every point metrics.jsonl holds, at its step, once: the crashed run's points after its
    # checkpoint (steps 8 and 10) were not logged a second time by the resumed run.
    points = collections.Counter()
    for key in run.data.metrics:
        points.update((key, point.step) for point in client.get_metric_history(run.info.run_id, key))
    assert points == jsonl_points(folder)
    history = client.get_metric_history(run.info.run_id, "val/loss")
    assert [point.step for point in history] == [6, 12, 18]
    assert [point.value for point in history] == [entry["val/loss"] for entry in
                                                   json.loads((folder / "results.json").read_text())["history"]]
    artifacts = {entry.path for entry in client.list_artifacts(run.info.run_id)}
    assert {"provenance.json", "results.json", "train.log", "status.json"} <= artifacts
    assert (tmp_path / "store" / "mlartifacts").is_dir()  # beside the local store, not in the working folder


def test_mlflow_params_are_the_resolved_recipe(tmp_path, fsdd_root):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "fsdd" / "digits.yaml"
    assert main(["train", str(recipe), "data.max_train_utterances=32", "data.max_eval_utterances=8", "trainer.max_epochs=1",
                 "trainer.progress_bar=false", f"experiment.loggers=[tensorboard, {{name: mlflow, tracking_uri: '{uri}'}}]",
                 "--exp-dir", str(tmp_path / "run")]) == 0
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("fsdd-digits").experiment_id])
    assert run.data.params["trainer.max_epochs"] == "1" and run.data.params["data.max_train_utterances"] == "32"
    assert run.data.params["optimizer.name"] == "adamw" and "model.name" in run.data.params
    assert "test/accuracy" in run.data.metrics and (tmp_path / "run" / "tensorboard").is_dir()
    assert "config.yaml" in {entry.path for entry in client.list_artifacts(run.info.run_id)}


class BrokenTracker(MetricLogger):
    def close(self):
        raise RuntimeError("the store went away")


def test_a_tracker_that_fails_to_close_is_warned_about_and_the_others_still_close(tmp_path, caplog):
    after = CSVLogger()
    experiment = Experiment(tmp_path, tensorboard=False, loggers=[BrokenTracker(), after])
    experiment.stop()
    assert after._handle is None and experiment.stopped
    assert "BrokenTracker could not close: the store went away" in caplog.text
