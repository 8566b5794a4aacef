"""PASE+ through its recipes on FSDD: a tiny pretraining with every worker and distortion, exact
resume, and the downstream recipes that load its encoder, frozen or fine-tuned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cadence
from cadence.checkpoint.checkpointer import find_checkpoint
from cadence.commands.cli import main

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPES = REPOSITORY / "recipes" / "fsdd"
# The shipped recipe's workers and distortions, a tiny encoder, a few simulated rooms.
ENCODER = ["model.sinc_filters=4", "model.sinc_kernel=31", "model.channels=[4,4,4,4,4,4,4]", "model.rnn_hidden=4",
           "model.output_size=8"]
TINY_PRETRAINING = ["data.corpus_sizes=[60,12,12]", "data.batching.max_seqs=16", *ENCODER,
                    "task.workers.regressors.waveform.model.channels=4", "features.0.simulated_rooms=3",
                    "trainer.progress_bar=false"]
# The downstream recipes' encoder must match the pretrained one.
TINY_DOWNSTREAM = ["data.labelled_per_class=2", "data.max_eval_utterances=30", "trainer.max_epochs=2", "model.hidden=16",
                   "trainer.progress_bar=false", *[f"model.encoder.{override.removeprefix('model.')}" for override in ENCODER]]
WORKERS = ["waveform", "lps", "lps_long", "fbank", "mfcc", "gammatone", "prosody", "lim", "gim"]
WEIGHTS = {"waveform": 3.0}  # the recipe's; every other worker weighs 1


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, fsdd_root) -> Path:
    directory = tmp_path_factory.mktemp("pase") / "run"
    assert main(["train", str(RECIPES / "pase.yaml"), *TINY_PRETRAINING, "trainer.max_epochs=3", "--exp-dir", str(directory)]) == 0
    return directory


def test_every_worker_reports_its_own_loss_and_the_total_is_their_weighted_sum(pretrained):
    records = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    validation = [record for record in records if "val/loss" in record]
    assert len(validation) == 3
    for record in validation:
        parts = [WEIGHTS.get(worker, 1.0) * record[f"val/loss_{worker}"] for worker in WORKERS]
        assert record["val/loss"] == pytest.approx(sum(parts), rel=1e-4)
    assert all(f"train/loss_{worker}" in validation[-1] for worker in WORKERS)
    # The workers learn: each regressor's training loss falls over 3 epochs (60 utterances are
    # too few for the validation losses to move; benchmarks/ssl_downstream.py reports those).
    for worker in ("lps", "lps_long", "fbank", "mfcc", "gammatone", "prosody"):
        assert validation[-1][f"train/loss_{worker}"] < 0.97 * validation[0][f"train/loss_{worker}"], worker
    # The waveform worker learns slowest (its standardized target; BENCHMARKS.md, issue 14): 2.5% here.
    assert validation[-1]["train/loss_waveform"] < 0.99 * validation[0]["train/loss_waveform"]


def test_pretraining_with_distortions_resumes_bit_identically(fsdd_root, capsys):
    assert main(["verify-resume", str(RECIPES / "pase.yaml"), *TINY_PRETRAINING, "data.batching.max_seqs=8", "--steps", "8"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.rindex('{\n  "recipe"'):])
    assert report["identical"] and report["differences"] == []


@pytest.mark.parametrize("frozen", [True, False])
def test_downstream_recipes_load_the_pretrained_encoder(pretrained, tmp_path, frozen, fsdd_root):
    directory = tmp_path / "downstream"
    overrides = [f"preload.0.path={pretrained}", f"model.freeze_encoder={str(frozen).lower()}"]
    assert main(["train", str(RECIPES / "pase_speakers.yaml"), *TINY_DOWNSTREAM, *overrides, "--exp-dir", str(directory)]) == 0
    log = (directory / "train.log").read_text()
    assert "preload.0" in log
    encoder_source = cadence.load(find_checkpoint(pretrained)).model.state_dict()  # preload reads the newest checkpoint
    downstream = cadence.load(directory).model  # the best checkpoint of the downstream run
    changed = [name for name, tensor in downstream.encoder.state_dict().items() if not torch.equal(tensor, encoder_source[name])]
    if frozen:
        assert changed == []  # the pretrained weights and batch-norm statistics, untouched by training
    else:
        assert "convolutions.0.weight" in changed
    results = json.loads((directory / "results.json").read_text())
    assert 0.0 <= results["test"]["test/accuracy"] <= 1.0
