"""Trainer overhead: cadence's Trainer against a hand-written PyTorch loop (and Lightning).

The same model, the same initial weights, the same optimizer and the very same list of
batches (FSDD digits, log-mel front-end, the recipe's CNN) are trained by each contender in
turn, round after round (the order rotating), so machine noise hits all of them alike. The
figure of merit is the median over rounds of each contender's epoch time divided by the raw
loop's in the same round. A second figure isolates the loop's own cost: microseconds per step on
a tiny linear model, where the framework's bookkeeping is all there is to measure. As a check
that cadence does no hidden extra work, the weights after one epoch from the same start must be
bit-identical to the raw loop's.

    python benchmarks/overhead.py [--rounds 10] [--epochs 1] [--utterances 2400]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from cadence import Callback, ClassificationTask, Trainer
from cadence.corpora.fsdd import find_fsdd, prepare_fsdd
from cadence.data.dataset import AudioDataset
from cadence.data.features import LogMel
from cadence.data.manifest import Manifest, read_labels
from cadence.data.processor import AudioDataProcessor
from cadence.models.cnn_classifier import CNNClassifier


def fixed_batches(utterances: int, batch_size: int, work_dir: Path) -> tuple[list, int]:
    written = prepare_fsdd(find_fsdd(), work_dir)["digits"]
    labels = read_labels(written["train"].parent / "labels.json")
    manifest = Manifest.read(written["train"])
    manifest = manifest.subset(range(min(utterances, len(manifest))))
    processor = AudioDataProcessor(8000, label_to_index={name: index for index, name in enumerate(labels)})
    dataset = AudioDataset(manifest, processor, preload=True)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    batches = [dataset.collate([dataset[index] for index in order[start : start + batch_size]]) for start in range(0, len(order), batch_size)]
    # One DataLoader over the ready batches, used by every contender (Lightning needs a DataLoader).
    return DataLoader(batches, batch_size=None, collate_fn=keep_batch), len(labels)


def keep_batch(batch):
    return batch


def new_task(initial_state: dict, classes: int) -> ClassificationTask:
    task = ClassificationTask(CNNClassifier(num_classes=classes), features=LogMel())
    task.load_state_dict(initial_state)
    return task


def new_optimizer(task: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(task.parameters(), lr=3e-3, weight_decay=0.01)


def raw_loop(task: ClassificationTask, batches: list, epochs: int) -> list[float]:
    """What a user writes by hand: features, forward, loss, backward, clip, step."""
    optimizer = new_optimizer(task)
    task.train()
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        for batch in batches:
            features, lengths = task.features(batch.inputs, batch.input_lengths)
            loss = F.cross_entropy(task.model(features, lengths), batch.targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(task.parameters(), 5.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    return times


class EpochTimer(Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_epoch_start(self, trainer):
        self.started = time.perf_counter()

    def on_epoch_end(self, trainer):
        self.times.append(time.perf_counter() - self.started)


def cadence_loop(task: ClassificationTask, batches: list, epochs: int) -> list[float]:
    timer = EpochTimer()
    trainer = Trainer(task, new_optimizer(task), max_epochs=epochs, clip_grad_norm=5.0, callbacks=[timer], progress_bar=False, device="cpu")
    trainer.fit(batches)
    return timer.times


def lightning_loop(task: ClassificationTask, batches: list, epochs: int) -> list[float] | None:
    try:
        import pytorch_lightning as lightning
    except ImportError:
        return None

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.task = task

        def training_step(self, batch, batch_index):
            return self.task.training_step(batch).loss

        def configure_optimizers(self):
            return new_optimizer(self.task)

        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            return batch  # CPU only: nothing to move

    class Timer(lightning.Callback):
        def __init__(self):
            self.times = []

        def on_train_epoch_start(self, trainer, module):
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.times.append(time.perf_counter() - self.started)

    timer = Timer()
    trainer = lightning.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=5.0, callbacks=[timer],
        num_sanity_val_steps=0,
    )
    trainer.fit(Module(), train_dataloaders=batches)
    return timer.times


def per_step_overhead(steps: int = 3000, repeats: int = 5) -> tuple[float, float]:
    """Microseconds per step on a tiny linear model, where the loop's own cost dominates."""
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(steps)]

    def raw(task: ClassificationTask) -> float:
        optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
        started = time.perf_counter()
        for inputs, targets in batches:
            F.cross_entropy(task.model(inputs), targets).backward()
            torch.nn.utils.clip_grad_norm_(task.parameters(), 5.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    def framework(task: ClassificationTask) -> float:
        trainer = Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), max_epochs=1, clip_grad_norm=5.0, progress_bar=False, device="cpu")
        started = time.perf_counter()
        trainer.fit(batches)
        return time.perf_counter() - started

    raw_times, framework_times = [], []
    for _ in range(repeats):
        raw_times.append(raw(ClassificationTask(torch.nn.Linear(4, 3))))
        framework_times.append(framework(ClassificationTask(torch.nn.Linear(4, 3))))
    return (round(statistics.median(raw_times) / steps * 1e6, 1), round(statistics.median(framework_times) / steps * 1e6, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--utterances", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work-dir", default="runs/benchmarks/overhead")
    arguments = parser.parse_args()
    torch.manual_seed(0)
    batches, classes = fixed_batches(arguments.utterances, arguments.batch_size, Path(arguments.work_dir))
    initial = copy.deepcopy(ClassificationTask(CNNClassifier(num_classes=classes), features=LogMel()).state_dict())

    # Same start, same batches, one epoch each: cadence must land on the raw loop's weights.
    raw_task, cadence_task = new_task(initial, classes), new_task(initial, classes)
    torch.manual_seed(1)  # the same dropout masks for both
    raw_loop(raw_task, batches, 1)
    torch.manual_seed(1)
    cadence_loop(cadence_task, batches, 1)
    identical = all(torch.equal(a, b) for a, b in zip(raw_task.state_dict().values(), cadence_task.state_dict().values()))

    contenders = {"raw": raw_loop, "cadence": cadence_loop, "lightning": lightning_loop}
    epoch_times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(arguments.rounds):
        # Rotate who goes first, so slow drifts of the machine do not favour anyone.
        names = list(contenders)
        names = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in names:
            times = contenders[name](new_task(initial, classes), batches, arguments.epochs)
            if times is None:
                epoch_times.pop(name, None)
                continue
            epoch_times[name].append(statistics.median(times))
        contenders = {name: loop for name, loop in contenders.items() if name in epoch_times}

    median = {name: statistics.median(times) for name, times in epoch_times.items()}

    def paired_ratio(name: str) -> float | None:
        # Rounds run back to back, so the ratio within a round cancels the machine's drift.
        if name not in epoch_times:
            return None
        return round(statistics.median(a / b for a, b in zip(epoch_times[name], epoch_times["raw"])), 4)

    raw_step, cadence_step = per_step_overhead()
    report = {
        "benchmark": "overhead",
        "batches_per_epoch": len(batches),
        "rounds": arguments.rounds,
        "epochs_per_round": arguments.epochs,
        "torch_threads": torch.get_num_threads(),
        "median_epoch_s": {name: round(value, 4) for name, value in median.items()},
        "cadence_over_raw": paired_ratio("cadence"),
        "lightning_over_raw": paired_ratio("lightning"),
        "cadence_over_lightning": round(median["cadence"] / median["lightning"], 4) if "lightning" in median else None,
        "lightning_installed": "lightning" in median,
        "weights_identical_to_raw_after_one_epoch": identical,
        "tiny_model_us_per_step": {"raw": raw_step, "cadence": cadence_step, "overhead_us": round(cadence_step - raw_step, 1)},
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
