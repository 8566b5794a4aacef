"""Mistakes in a recipe are one line and exit 2, and leave no experiment folder behind;
a run whose loss turns NaN stops with one line and saves nothing after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadence.commands.cli import main
from cadence.run_status import read_status

REPOSITORY = Path(__file__).resolve().parents[2]
DIGITS = str(REPOSITORY / "recipes" / "fsdd" / "digits.yaml")
QUICK = ["data.max_train_utterances=64", "data.max_eval_utterances=16", "trainer.progress_bar=false"]

# A user component whose constructor refuses a combination no schema can express.
COMPONENTS = '''
from torch import nn
from cadence.registry import MODELS


@MODELS.register("picky_model")
class PickyModel(nn.Module):
    def __init__(self, num_classes: int, hidden: int = 8, heads: int = 3):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})\\nsee the docs")
        self.layer = nn.LazyLinear(num_classes)

    def forward(self, inputs, lengths=None):
        return self.layer(inputs.flatten(1))
'''


def one_line(error: str) -> str:
    """The one line that says what went wrong (the run's progress lines before it aside)."""
    lines = [line for line in error.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1 and lines[0].startswith("cadence: error: ") and "Traceback" not in error, error
    return lines[0]


def test_a_component_that_refuses_its_values_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    (tmp_path / "picky.py").write_text(COMPONENTS)
    recipe = (REPOSITORY / "recipes" / "fsdd" / "digits.yaml").read_text().replace(
        "model:\n  name: cnn_classifier", "model:\n  name: picky_model"
    )
    (tmp_path / "picky.yaml").write_text("imports: [picky.py]\n" + recipe)
    root = tmp_path / "runs"
    assert main(["train", str(tmp_path / "picky.yaml"), *QUICK, f"experiment.root={root}"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("cadence: error: model (picky_model): cannot be built with these values: ValueError: hidden (8)")
    assert "see the docs" in line  # the component's own words, on the same line
    assert not root.exists()  # neither the run's folder nor the folders above it that it made
    assert main(["train", str(tmp_path / "picky.yaml"), *QUICK, "model.hidden=10", "--exp-dir", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_a_model_that_cannot_take_its_features_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    # Refused at the first step, when the model sees the features: nothing trained, no folder kept.
    directory = tmp_path / "run"
    assert main(["train", DIGITS, *QUICK, "model.n_mels=41", "--exp-dir", str(directory)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "cnn_classifier with n_mels=41 takes features [batch, 41, frames]" in line and "model.n_mels" in line
    assert not directory.exists()


def test_a_yaml_tag_in_an_override_is_one_line(capsys):
    assert main(["train", DIGITS, 'model.channels=!!python/object/apply:os.system ["echo hi"]', "--print-config"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "model.channels" in line and "never read" in line


def test_an_unknown_monitor_is_refused_before_any_folder_exists(tmp_path, capsys):
    assert main(["train", DIGITS, *QUICK, "trainer.monitor=ten", "--exp-dir", str(tmp_path / "run")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "trainer.monitor: 'ten' is never among the validation results" in line and "val/accuracy" in line
    assert main(["train", DIGITS, *QUICK, "callbacks.0.monitor=val/acc", "--exp-dir", str(tmp_path / "run")]) == 2
    assert "did you mean 'val/accuracy'" in one_line(capsys.readouterr().err)
    # A tie-breaker is checked as the monitored value is, and its modes must fit its keys.
    assert main(["train", DIGITS, *QUICK, "trainer.monitor=[val/accuracy, val/los]", "--exp-dir", str(tmp_path / "run")]) == 2
    assert "trainer.monitor.1: 'val/los' is never among the validation results" in one_line(capsys.readouterr().err)
    assert main(["train", DIGITS, *QUICK, "trainer.monitor=[val/accuracy, val/loss]", "trainer.mode=[max]",
                 "--exp-dir", str(tmp_path / "run")]) == 2
    assert "trainer.mode lists 1 modes for the 2 monitored keys" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


@pytest.mark.usefixtures("fsdd_root")
def test_a_loss_that_turns_nan_stops_the_run_with_one_line_and_no_nan_checkpoint(tmp_path, capsys):
    # A weight decay this large makes the weights, then the loss, non-finite within an epoch.
    directory = tmp_path / "run"
    assert main(["train", DIGITS, *QUICK, "optimizer.weight_decay=1e12", "trainer.max_epochs=2", "--exp-dir", str(directory)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "diverged" in line and "nothing was saved after it" in line and "optimizer.lr" in line
    assert not (directory / "results.json").exists()
    assert not [path for path in (directory / "checkpoints").iterdir() if not path.name.startswith(".")]
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    assert lines == [] or all(record.get("split") != "test" for record in lines)
    status = read_status(directory)  # cadence ls: crashed, and why
    assert status["status"] == "crashed" and "diverged" in status["note"]
