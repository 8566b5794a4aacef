"""A user's own model, metric, callback and logger, registered in their own file and listed under
``imports:``, train a real FSDD run through ``cadence train`` with no change to cadence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from cadence.checkpoint.format import load_checkpoint

REPOSITORY = Path(__file__).resolve().parents[2]

USER_MODULE = '''
"""The user's file: one model, one metric, one callback, one logger, each registered under a name of theirs."""
import json
from pathlib import Path

import torch
from torch import nn

from cadence import Callback
from cadence.metrics.base import Metric
from cadence.loggers import MetricLogger
from cadence.registry import CALLBACKS, LOGGERS, METRICS, MODELS


@MODELS.register("user_mean_pool")
class MeanPool(nn.Module):
    """Log-mel bands averaged over valid frames, then one linear layer."""

    def __init__(self, num_classes: int, n_mels: int = 40):
        super().__init__()
        self.user_linear = nn.Linear(n_mels, num_classes)

    def forward(self, features, lengths):
        mask = (torch.arange(features.shape[-1], device=features.device)[None, :] < lengths[:, None])[:, None, :]
        pooled = (features * mask).sum(-1) / lengths[:, None].clamp_min(1)
        return self.user_linear(pooled)


@METRICS.register("user_count")
class UtteranceCount(Metric):
    """How many utterances were scored: a count, so it sums over processes."""

    name = "utterances"

    def __init__(self):
        super().__init__()
        self.add_count("seen", torch.zeros((), dtype=torch.int64))

    def update(self, predictions, targets):
        self.counts["seen"] += len(targets)

    def compute(self):
        return {self.name: float(self.counts["seen"])}


@CALLBACKS.register("user_epoch_log")
class EpochLog(Callback):
    """Writes each finished epoch and its validation accuracy to a file of its own."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_validation_end(self, trainer, metrics):
        with self.path.open("a") as handle:
            handle.write(json.dumps({"epoch": trainer.state.epoch, "accuracy": metrics["val/accuracy"]}) + "\\n")


@LOGGERS.register("user_tracker")
class Tracker(MetricLogger):
    """Sends every logged line to "the lab's tracker": a file of its own here."""

    def __init__(self, path: str):
        self.path = Path(path)

    def start(self, config, resumed):
        self.path.write_text(json.dumps({"run": config["name"]}) + "\\n")

    def log_metrics(self, values, step, epoch, split):
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, "split": split, **values}) + "\\n")

    def finish(self, status):
        with self.path.open("a") as handle:
            handle.write(json.dumps({"ended": status}) + "\\n")
'''


def test_a_users_model_metric_and_callback_from_imports_train_a_real_run(tmp_path, fsdd_root):
    (tmp_path / "user_parts.py").write_text(textwrap.dedent(USER_MODULE))
    recipe = yaml.safe_load((REPOSITORY / "recipes" / "fsdd" / "digits.yaml").read_text())
    log, tracked = tmp_path / "epochs.jsonl", tmp_path / "tracker.jsonl"
    recipe.update({
        "imports": ["user_parts.py"],  # relative to the recipe
        "model": {"name": "user_mean_pool"},
        "metrics": ["accuracy", "user_count"],
        "callbacks": [{"name": "user_epoch_log", "path": str(log)}],
        "experiment": {"loggers": ["tensorboard", {"name": "user_tracker", "path": str(tracked)}]},
        "trainer": {**recipe["trainer"], "max_epochs": 2, "progress_bar": False},
    })
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    finished = subprocess.run(
        [sys.executable, "-m", "cadence", "train", str(tmp_path / "recipe.yaml"), "data.max_train_utterances=64",
         "data.max_eval_utterances=16", "--exp-dir", str(run)],
        env={**os.environ, "CADENCE_FSDD_ROOT": str(fsdd_root)}, capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    # The user's metric scored every evaluation utterance, and the callback saw both epochs.
    assert results["best_validation"]["val/utterances"] == 16.0 and results["test"]["test/utterances"] == 16.0
    epochs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [entry["epoch"] for entry in epochs] == [0, 1]  # trainer.state.epoch counts from 0
    assert epochs[results["best_epoch"] - 1]["accuracy"] == results["best_validation"]["val/accuracy"]
    # The user's logger got the run's name, every line metrics.jsonl holds, and how the run ended.
    lines = [json.loads(line) for line in tracked.read_text().splitlines()]
    assert lines[0] == {"run": recipe["name"]} and lines[-1] == {"ended": "finished"}
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["split"]) for line in lines[1:-1]] == [(line["step"], line["split"]) for line in logged]
    # The model trained is the user's: its own parameter names are in the final checkpoint.
    state, _ = load_checkpoint(Path(results["final_checkpoint"]))
    assert sorted(state["task"]) == ["model.user_linear.bias", "model.user_linear.weight"]
    # The run's code/ snapshot keeps the user's file, so the run can be rebuilt from its folder.
    [copy] = (run / "code").rglob("user_parts.py")
    assert copy.read_text() == (tmp_path / "user_parts.py").read_text()
