"""Exact resume: a run interrupted anywhere and resumed ends bit-identical to one that was not.

The runs use the real pipeline (FSDD audio, AudioDataLoader plans, log-mel, SpecAugment and
dropout drawing random numbers, AdamW, a per-step schedule, early stopping's counters).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile
import torch

from cadence import Trainer
from cadence.callbacks import EarlyStopping
from cadence.checkpoint.checkpointer import checkpoint_name
from cadence.checkpoint.format import load_checkpoint
from cadence.checkpoint.retention import CheckpointPolicy
from cadence.data.dataset import AudioDataset
from cadence.data.features import LogMel
from cadence.data.loader import AudioDataLoader
from cadence.data.manifest import Manifest, ManifestEntry
from cadence.data.pipeline import FeaturePipeline
from cadence.data.processor import AudioDataProcessor
from cadence.data.sampler import BatchingOptions, BatchSampler
from cadence.data.spec_augment import SpecAugment
from cadence.experiment import Experiment
from cadence.metrics import Accuracy
from cadence.models.cnn_classifier import CNNClassifier
from cadence.checkpoint.rng import seed_everything
from cadence.tasks import ClassificationTask
from cadence.commands.verify import differences

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
BATCHES_PER_EPOCH = 6  # 96 training utterances, 16 a batch
TOTAL_STEPS = 2 * BATCHES_PER_EPOCH + 3  # into the third epoch


@pytest.fixture(scope="module")
def manifests(fsdd_root: Path) -> dict[str, Manifest]:
    paths = sorted((fsdd_root / "recordings").glob("*.wav"))
    entry = lambda path: ManifestEntry(id=path.stem, audio=path, duration=soundfile.info(path).duration, label=WORDS[int(path.name[0])])
    return {"train": Manifest([entry(path) for path in paths[::31][:96]]), "valid": Manifest([entry(path) for path in paths[5::120]])}


def run(directory: Path, manifests, *, workers: int, max_steps: int, max_epochs: int = 10, resume: bool = False) -> Trainer:
    seed_everything(0)
    processor = AudioDataProcessor(8000, label_to_index={word: index for index, word in enumerate(WORDS)})
    train_set = AudioDataset(manifests["train"], processor, skip_bad_audio=True)
    train = AudioDataLoader(train_set, BatchSampler(train_set.durations, BatchingOptions(max_frames=None, max_seqs=16, ordering="random"), seed=0),
                            num_workers=workers)
    valid_set = AudioDataset(manifests["valid"], processor)
    valid = AudioDataLoader(valid_set, BatchSampler(valid_set.durations, BatchingOptions(ordering="sorted")), resumable=False)
    features = FeaturePipeline([LogMel(), SpecAugment(freq_width=6, time_width=8)])
    task = ClassificationTask(CNNClassifier(num_classes=10, channels=8, layers=2, dropout=0.3), features=features)
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.97)
    experiment = Experiment(directory, tensorboard=False)
    try:
        trainer = Trainer(
            task, optimizer, scheduler=scheduler, scheduler_interval="step", max_epochs=max_epochs, max_steps=max_steps,
            device="cpu", metrics=[Accuracy(num_classes=10)], train_metrics_every=4, callbacks=[EarlyStopping(patience=50)],
            experiment=experiment, log_every=2, progress_bar=False, checkpoint_policy=CheckpointPolicy(keep_last=2),
        )
        trainer.fit(train, valid, resume_from=directory if resume else None)
    finally:
        experiment.stop()
    return trainer


def final_state(trainer: Trainer) -> dict:
    state, _ = load_checkpoint(trainer.checkpointer.directory / checkpoint_name(trainer.state.global_step))
    return {"task": state["task"], "optimizer": state["optimizer"], "scheduler": state["scheduler"], "rng": state["rng"]["torch"]}


def assert_identical(first, second) -> None:
    compared, differing = differences(first, second)  # the comparison `cadence verify-resume` makes
    assert compared > 0 and differing == [], differing


@pytest.fixture(scope="module")
def uninterrupted(manifests, tmp_path_factory):
    return {workers: final_state(run(tmp_path_factory.mktemp("straight"), manifests, workers=workers, max_steps=TOTAL_STEPS))
            for workers in (0, 2)}


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("interrupt_after", [1, 3, BATCHES_PER_EPOCH], ids=["first-step", "mid-epoch", "last-batch"])
def test_resume_inside_an_epoch_is_bit_identical(manifests, uninterrupted, tmp_path, workers, interrupt_after):
    run(tmp_path, manifests, workers=workers, max_steps=interrupt_after)
    resumed = run(tmp_path, manifests, workers=workers, max_steps=TOTAL_STEPS, resume=True)
    assert resumed.state.global_step == TOTAL_STEPS
    assert_identical(final_state(resumed), uninterrupted[workers])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_at_an_epoch_boundary_is_bit_identical(manifests, uninterrupted, tmp_path, workers):
    first = run(tmp_path, manifests, workers=workers, max_steps=TOTAL_STEPS, max_epochs=1)
    assert first.state.epoch == 1 and first.train_loader.cursor == 0  # stopped after the epoch's validation
    resumed = run(tmp_path, manifests, workers=workers, max_steps=TOTAL_STEPS, resume=True)
    assert_identical(final_state(resumed), uninterrupted[workers])
    assert [entry["epoch"] for entry in resumed.state.history] == [1, 2]  # one validation per epoch, none repeated


def test_metrics_continue_without_duplicated_steps(manifests, tmp_path):
    import json

    run(tmp_path, manifests, workers=0, max_steps=3)
    run(tmp_path, manifests, workers=0, max_steps=TOTAL_STEPS, resume=True)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_steps = [record["step"] for record in records if record["split"] == "train" and "train/loss" in record]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == TOTAL_STEPS - TOTAL_STEPS % 2


def test_fit_stops_its_loader_workers_when_it_ends(manifests, tmp_path):
    """An epoch left unfinished leaves no worker processes behind: garbage collection would
    otherwise stop them at a random later moment, for seconds per worker."""
    import multiprocessing

    before = set(multiprocessing.active_children())
    trainer = run(tmp_path, manifests, workers=2, max_steps=1)
    assert trainer.train_loader.cursor == 1  # stopped inside the epoch, its iterator unfinished
    assert set(multiprocessing.active_children()) - before == set()
    run(tmp_path, manifests, workers=2, max_steps=3, resume=True)  # new workers, from the saved position
