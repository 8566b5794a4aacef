"""Resuming inside an epoch costs the same anywhere in it; checkpoint save and load times.

Part 1, time to resume: a run of the digits recipe's model on FSDD digits (train: 2,400
utterances, 32 a batch, 75 batches an epoch, audio decoded from disk by AudioDataLoader with
no preloading) is checkpointed at 1%, 50% and 99% of its first epoch. Each position is then
resumed by a fresh Trainer: the time from the ``Trainer.fit(resume_from=...)`` call to the end
of the first training step, split into the resume itself (find, verify, load and restore the
checkpoint) and the first step (plan, loading one batch, forward, backward, update). Side by
side, the naive way: the same loader behind a plain iterable, which the Trainer must iterate
and discard up to the position (the skipped batches are loaded and thrown away). Each run
also counts the utterances the dataset loaded. The order of the contenders rotates over
rounds; the median is reported. Audio files are in the page cache after the first round,
so the naive figures are a lower bound (a cold disk makes skipping slower still).

Part 2, checkpoints: save time (capturing the Trainer's whole state, writing, fsyncing,
renaming), load time (verifying the sha256 manifest, reading), and restore time (load, then
every component's ``load_state_dict``), each the median of several, for the recipe's model
(CNNClassifier defaults) with its AdamW state; and the checkpoint's size on disk.

    python benchmarks/resume.py [--rounds 5] [--saves 9] [--root FSDD_ROOT]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cadence.callbacks import Callback  # noqa: E402
from cadence.checkpoint.format import load_checkpoint, save_checkpoint  # noqa: E402
from cadence.checkpoint.retention import CheckpointPolicy  # noqa: E402
from cadence.corpora.fsdd import find_fsdd, prepare_fsdd  # noqa: E402
from cadence.data.dataset import AudioDataset  # noqa: E402
from cadence.data.features import LogMel  # noqa: E402
from cadence.data.loader import AudioDataLoader  # noqa: E402
from cadence.data.manifest import Manifest, read_labels  # noqa: E402
from cadence.data.processor import AudioDataProcessor  # noqa: E402
from cadence.data.sampler import BatchingOptions, BatchSampler  # noqa: E402
from cadence.experiment import Experiment  # noqa: E402
from cadence.models.cnn_classifier import CNNClassifier  # noqa: E402
from cadence.checkpoint.rng import seed_everything  # noqa: E402
from cadence.tasks import ClassificationTask  # noqa: E402
from cadence.trainer import Trainer  # noqa: E402

BATCH_SIZE = 32  # recipes/fsdd/digits.yaml
FRACTIONS = {"1%": 0.01, "50%": 0.50, "99%": 0.99}


class CountingDataset(AudioDataset):
    """Counts the utterances read (the loader runs in this process: num_workers=0)."""

    loaded = 0

    def __getitem__(self, key):
        CountingDataset.loaded += 1
        return super().__getitem__(key)


class PlainIterable:
    """The loader without ``state_dict``/``load_state_dict``: the Trainer can only resume it by
    iterating from the epoch's start and discarding batches (what a plain DataLoader needs)."""

    def __init__(self, loader: AudioDataLoader):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)


class Probe(Callback):
    """Saves checkpoints at given steps (when making them), or times a resumed fit's first step
    and stops it there. Stateless, so every Trainer here has the same callbacks in its checkpoints."""

    def __init__(self, save_at: set[int] = frozenset(), stop_after_first_step: bool = False):
        self.save_at, self.stop_after_first_step = save_at, stop_after_first_step
        self.fit_started = self.first_step_done = 0.0
        self.first_batch_ids: list[str] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.fit_started = time.perf_counter()

    def on_batch_start(self, trainer: Trainer, batch) -> None:
        if not self.first_batch_ids:
            self.first_batch_ids = list(batch.ids)

    def on_batch_end(self, trainer: Trainer, output) -> None:
        if trainer.state.global_step in self.save_at:
            trainer.save_checkpoint()
        if self.stop_after_first_step:
            self.first_step_done = time.perf_counter()
            trainer.state.should_stop = True


def build(dataset: AudioDataset, num_classes: int, probe: Probe, experiment: Experiment | None = None):
    """The digits recipe's loader, model, optimizer and schedule (its YAML, spelled out)."""
    options = BatchingOptions(max_frames=None, max_seqs=BATCH_SIZE, ordering="random")
    sampler = BatchSampler(dataset.durations, options, seed=0)
    loader = AudioDataLoader(dataset, sampler, num_workers=0, pin_memory=False)
    task = ClassificationTask(CNNClassifier(num_classes=num_classes), features=LogMel(n_mels=40), label_smoothing=0.1)
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.858)
    policy = CheckpointPolicy(every_epochs=None, keep_last=len(FRACTIONS))  # the probe decides when to save
    trainer = Trainer(task, optimizer, scheduler=scheduler, max_epochs=30, device="cpu", callbacks=[probe],
                      experiment=experiment, progress_bar=False, checkpoint_policy=policy)
    return trainer, loader


def make_checkpoints(dataset: AudioDataset, num_classes: int, positions: dict[str, int], folder: Path) -> dict[str, Path]:
    """Train the first epoch up to the last position, saving at each one."""
    seed_everything(0)
    with Experiment(folder, tensorboard=False) as experiment:
        trainer, loader = build(dataset, num_classes, Probe(save_at=set(positions.values())), experiment)
        trainer.max_steps = max(positions.values())
        trainer.fit(loader)
    return {name: folder / "checkpoints" / f"step-{step:09d}" for name, step in positions.items()}


def time_resume(dataset: AudioDataset, num_classes: int, checkpoint: Path, naive: bool) -> dict:
    seed_everything(1)  # overwritten by the checkpoint's generators
    probe = Probe(stop_after_first_step=True)
    trainer, loader = build(dataset, num_classes, probe)
    data = PlainIterable(loader) if naive else loader
    CountingDataset.loaded = 0
    started = time.perf_counter()
    trainer.fit(data, resume_from=checkpoint)
    return {"total_s": probe.first_step_done - started, "resume_s": probe.fit_started - started,
            "first_step_s": probe.first_step_done - probe.fit_started, "utterances_loaded": CountingDataset.loaded,
            "first_batch_ids": probe.first_batch_ids, "global_step": trainer.state.global_step}


def checkpoint_figures(trainer: Trainer, folder: Path, saves: int) -> dict:
    """Save, load and restore the trainer's state ``saves`` times each."""
    save_s, load_s, restore_s = [], [], []
    for index in range(saves):
        path = folder / f"save-{index}"
        started = time.perf_counter()
        save_checkpoint(path, trainer.state_dict(), {"global_step": index})
        save_s.append(time.perf_counter() - started)
    for index in range(saves):
        path = folder / f"save-{(index * 5) % saves}"  # not always the one just written
        started = time.perf_counter()
        state, _ = load_checkpoint(path)
        load_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        state, _ = load_checkpoint(path)
        trainer.load_state_dict(state)
        restore_s.append(time.perf_counter() - started)
    files = {entry.name: entry.stat().st_size for entry in (folder / "save-0").iterdir()}
    parameters = sum(parameter.numel() for parameter in trainer.task.parameters())
    optimizer_tensors = sum(value.numel() for entry in trainer.optimizer.state.values() for value in entry.values()
                            if isinstance(value, torch.Tensor))
    milliseconds = lambda values: {"median_ms": round(1000 * statistics.median(values), 2),
                                   "all_ms": [round(1000 * value, 2) for value in values]}
    return {
        "model": "CNNClassifier(num_classes=10), default size (channels 64, layers 4, kernel 5, 40 mel bands)",
        "parameters": parameters,
        "optimizer": "AdamW (exp_avg, exp_avg_sq, step per parameter)",
        "optimizer_state_values": optimizer_tensors,
        "save": milliseconds(save_s),
        "load": milliseconds(load_s),
        "restore": milliseconds(restore_s),
        "size_bytes": {"total": sum(files.values()), **files},
        "folder": str(folder.parent),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--saves", type=int, default=9)
    parser.add_argument("--root", default=None, help="FSDD folder (default: find_fsdd())")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cadence-resume-bench-"))
    try:
        report = measure(arguments, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


def measure(arguments: argparse.Namespace, work: Path) -> dict:
    manifests = prepare_fsdd(find_fsdd(arguments.root), work / "manifests")["digits"]
    labels = read_labels(manifests["train"].parent / "labels.json")
    processor = AudioDataProcessor(8000, label_to_index={label: index for index, label in enumerate(labels)})
    dataset = CountingDataset(Manifest.read(manifests["train"]), processor, preload=False)
    batches = len(build(dataset, len(labels), Probe())[1].batch_sampler.plan(0))
    positions = {name: min(max(round(fraction * batches), 1), batches - 1) for name, fraction in FRACTIONS.items()}
    checkpoints = make_checkpoints(dataset, len(labels), positions, work / "experiment")

    time_resume(dataset, len(labels), checkpoints["1%"], naive=False)  # warm-up: first-call costs of torch
    contenders = [(name, naive) for name in FRACTIONS for naive in (False, True)]
    runs: dict[tuple[str, bool], list[dict]] = {contender: [] for contender in contenders}
    for round_number in range(arguments.rounds):
        shift = round_number % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            runs[contender].append(time_resume(dataset, len(labels), checkpoints[contender[0]], naive=contender[1]))

    def summary(results: list[dict]) -> dict:
        return {"median_s": round(statistics.median(result["total_s"] for result in results), 3),
                "resume_s": round(statistics.median(result["resume_s"] for result in results), 3),
                "first_step_s": round(statistics.median(result["first_step_s"] for result in results), 3),
                "utterances_loaded": results[0]["utterances_loaded"],
                "all_s": [round(result["total_s"], 3) for result in results]}

    resume = {}
    for name, batch in positions.items():
        cursor, naive = runs[(name, False)], runs[(name, True)]
        # Both ways must train the same batch next, at the same step.
        assert cursor[0]["first_batch_ids"] == naive[0]["first_batch_ids"], name
        assert cursor[0]["global_step"] == naive[0]["global_step"] == batch + 1, name
        resume[name] = {"batch": batch, "cursor": summary(cursor), "naive_skip": summary(naive),
                        "naive_over_cursor": round(statistics.median(r["total_s"] for r in naive)
                                                   / statistics.median(r["total_s"] for r in cursor), 1)}

    trainer, loader = build(dataset, len(labels), Probe(stop_after_first_step=True))
    trainer.fit(loader, resume_from=checkpoints["50%"])  # a real AdamW state, one step after a real checkpoint
    return {
        "benchmark": "resume",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "corpus": {"name": "fsdd digits (train)", "utterances": len(dataset), "batch_size": BATCH_SIZE,
                   "batches_per_epoch": batches, "num_workers": 0, "preload": False},
        "resume": resume,
        "checkpoint": checkpoint_figures(trainer, work / "saves", arguments.saves),
    }


if __name__ == "__main__":
    main()
