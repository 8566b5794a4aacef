"""The recipe's initialization, preload and freeze sections on FSDD: a run starts from another
run's weights except its head, trains only what is not frozen, and a resume reads no source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from cadence.checkpoint.format import load_checkpoint
from cadence.commands.cli import main

REPOSITORY = Path(__file__).resolve().parents[2]
DIGITS = str(REPOSITORY / "recipes" / "fsdd" / "digits.yaml")
SMALL = ["data.max_train_utterances=96", "data.max_eval_utterances=20", "model.channels=8", "model.layers=2",
         "trainer.progress_bar=false"]


def last_task_state(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(sorted((run / "checkpoints").iterdir())[-1])[0]["task"]


def test_a_run_preloads_another_run_freezes_its_convolutions_and_resumes_without_the_source(tmp_path, fsdd_root):
    source = tmp_path / "source"
    assert main(["train", DIGITS, *SMALL, "trainer.max_steps=3", "--exp-dir", str(source)]) == 0
    pretrained = last_task_state(source)
    run = tmp_path / "run"
    sections = [
        f"preload=[{{path: {source}, ignore_params: ['model.head.*']}}]",
        "freeze=['model.convolutions.*']",
        "initialization=[{params: 'model.head.bias', init: constant, value: 0.5}]",
    ]
    assert main(["train", DIGITS, *SMALL, *sections, "trainer.max_steps=4", "--exp-dir", str(run)]) == 0
    log = (run / "train.log").read_text()
    assert "model.head.weight" in log and "ignored" in log  # the preload report is logged
    trained = last_task_state(run)
    for name in ("model.convolutions.0.weight", "model.convolutions.1.weight"):  # preloaded, then frozen
        assert torch.equal(trained[name], pretrained[name]), name
    assert not torch.equal(trained["model.norms.0.weight"], pretrained["model.norms.0.weight"])  # preloaded, trained on
    config = json.loads(json.dumps(load_checkpoint(sorted((run / "checkpoints").iterdir())[-1])[0]["config"]))
    assert config["freeze"] == ["model.convolutions.*"] and config["preload"][0]["init_for_train"] is True
    # A resume loads its own checkpoint: the preload source is not read (it may be gone), the freeze holds.
    shutil.rmtree(source)
    assert main(["resume", str(run), "trainer.max_steps=6"]) == 0
    resumed = last_task_state(run)
    assert torch.equal(resumed["model.convolutions.0.weight"], pretrained["model.convolutions.0.weight"])
