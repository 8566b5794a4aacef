"""One training process of the kill-and-resume test (tests/integration/test_kill_resume.py).

Not a test module (pytest collects ``test_*.py`` only): the test runs it as a program and
SIGKILLs it at random moments.

    python tests/integration/kill_resume_worker.py EXP_DIR --fsdd-root ROOT [--max-steps 30]

It trains a small real model (FSDD audio through AudioDataLoader, log-mel and SpecAugment,
a CNN classifier with dropout, AdamW with a per-step schedule, a validation pass per epoch)
in the experiment folder EXP_DIR, saving a checkpoint after every step and keeping the last
two (and the best). When EXP_DIR already holds a checkpoint it resumes from it
(``Trainer.fit(..., resume_from=EXP_DIR)``); a run killed after its final save resumes,
trains no further step, and writes the marker. What it
does is appended to ``EXP_DIR/events.jsonl``, one JSON object a line, for the test to check:

- ``{"event": "load", "path": ...}`` for every checkpoint it loads, written before loading;
- ``{"event": "fit_start", "global_step": ...}`` once resumed, before the first step;
- at the end, ``EXP_DIR/finished.json`` (the marker) names the final checkpoint.

``CADENCE_KILL_RESUME_SAVE_DELAY=SECONDS`` slows every save down, in this process only
(see :func:`slow_down_saves`), so that a kill has a good chance of landing inside a save.
:func:`train` is the run itself, also usable in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SAVE_DELAY_VARIABLE = "CADENCE_KILL_RESUME_SAVE_DELAY"
EVENTS_FILE, FINISHED_FILE = "events.jsonl", "finished.json"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRAIN_UTTERANCES, VALID_UTTERANCES, BATCH_SIZE = 48, 10, 16  # 3 steps an epoch


def record(directory: Path, event: str, **fields) -> None:
    """Append one line; a single small write, so a kill leaves it whole or absent."""
    line = json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields}) + "\n"
    with open(directory / EVENTS_FILE, "a", encoding="utf-8") as handle:
        handle.write(line)


def record_every_load(directory: Path) -> None:
    """Wrap the checkpoint loader wherever cadence imported it (the Trainer among them), so
    every loaded path is on record."""
    import cadence.checkpoint.format
    import cadence.trainer  # noqa: F401  (imported here so that its name is replaced too)

    load = cadence.checkpoint.format.load_checkpoint

    def recorded_load(folder, *arguments, **keywords):
        record(directory, "load", path=str(Path(folder).resolve()))
        return load(folder, *arguments, **keywords)

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "cadence" and getattr(module, "load_checkpoint", None) is load:
            module.load_checkpoint = recorded_load


def slow_down_saves(seconds: float) -> None:
    """Widen the windows where a save is half done: files being written into the temporary
    folder (``seconds`` before each), a deleted checkpoint lying under its ``.trash-`` name
    (``seconds``), and a replaced one set aside there while the new one is not in place yet
    (``4 * seconds``: the rarest window, and the one where a kill would lose a checkpoint)."""
    import cadence.checkpoint.format

    write = cadence.checkpoint.format._write_durably
    rename = os.rename

    def slow_write(path, data):
        time.sleep(seconds)
        write(path, data)

    def slow_rename(source, destination, *arguments, **keywords):
        rename(source, destination, *arguments, **keywords)
        source, destination = Path(source), Path(destination)
        if destination.name.startswith(cadence.checkpoint.format.TRASH_PREFIX):
            new_version = f"{cadence.checkpoint.format.TEMPORARY_PREFIX}{source.name}-"
            replacing = any(entry.name.startswith(new_version) for entry in source.parent.iterdir())
            time.sleep(4 * seconds if replacing else seconds)

    cadence.checkpoint.format._write_durably = slow_write
    os.rename = slow_rename  # this process only; cadence.checkpoint.format calls os.rename


def build_manifests(fsdd_root: Path):
    import soundfile

    from cadence.data.manifest import Manifest, ManifestEntry

    paths = sorted((fsdd_root / "recordings").glob("*.wav"))

    def entry(path: Path) -> ManifestEntry:
        duration = soundfile.info(str(path)).duration
        return ManifestEntry(id=path.stem, audio=path, duration=duration, label=WORDS[int(path.name[0])])

    train = [entry(path) for path in paths[::61][:TRAIN_UTTERANCES]]
    valid = [entry(path) for path in paths[7::293][:VALID_UTTERANCES]]
    return Manifest(train), Manifest(valid)


def newest_checkpoint(directory: Path) -> tuple[str, int] | None:
    """``(name, global_step)`` of the newest checkpoint with a manifest, read without loading it."""
    from cadence.checkpoint.checkpointer import Checkpointer
    from cadence.checkpoint.checkpointer import listing

    entries = listing(Checkpointer(directory / "checkpoints"))
    return max(((entry.name, entry.global_step) for entry in entries), key=lambda entry: entry[1], default=None)


def train(directory: Path, fsdd_root: Path, max_steps: int, on_fit_start=None) -> dict:
    """Build the run and ``fit`` it, resuming from ``directory`` when it holds a checkpoint."""
    import torch

    from cadence.callbacks import Callback
    from cadence.checkpoint.retention import CheckpointPolicy
    from cadence.data.dataset import AudioDataset
    from cadence.data.features import LogMel
    from cadence.data.loader import AudioDataLoader
    from cadence.data.pipeline import FeaturePipeline
    from cadence.data.processor import AudioDataProcessor
    from cadence.data.sampler import BatchingOptions, BatchSampler
    from cadence.data.spec_augment import SpecAugment
    from cadence.experiment import Experiment
    from cadence.models.cnn_classifier import CNNClassifier
    from cadence.checkpoint.rng import seed_everything
    from cadence.tasks import ClassificationTask
    from cadence.trainer import Trainer

    class FitStart(Callback):  # no state: what a checkpoint holds is the same with or without it
        def on_fit_start(self, trainer: Trainer) -> None:
            if on_fit_start is not None:
                on_fit_start(trainer)

    seed_everything(0)
    train_manifest, valid_manifest = build_manifests(fsdd_root)
    processor = AudioDataProcessor(8000, label_to_index={word: index for index, word in enumerate(WORDS)})
    train_set = AudioDataset(train_manifest, processor, skip_bad_audio=True)
    options = BatchingOptions(max_frames=None, max_seqs=BATCH_SIZE, ordering="random")
    train_data = AudioDataLoader(train_set, BatchSampler(train_set.durations, options, seed=0))
    valid_set = AudioDataset(valid_manifest, processor)
    valid_sampler = BatchSampler(valid_set.durations, BatchingOptions(ordering="sorted"))
    valid_data = AudioDataLoader(valid_set, valid_sampler, resumable=False)
    features = FeaturePipeline([LogMel(), SpecAugment(freq_width=6, time_width=8)])
    task = ClassificationTask(CNNClassifier(num_classes=10, channels=8, layers=2, dropout=0.3), features=features)
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.97)
    resume = newest_checkpoint(directory) is not None
    experiment = Experiment(directory, tensorboard=False)
    try:
        trainer = Trainer(
            task, optimizer, scheduler=scheduler, scheduler_interval="step", max_epochs=1000, max_steps=max_steps,
            device="cpu", callbacks=[FitStart()], experiment=experiment, log_every=5, progress_bar=False,
            checkpoint_policy=CheckpointPolicy(every_steps=1, keep_last=2),
        )
        return trainer.fit(train_data, valid_data, resume_from=directory if resume else None)
    finally:
        experiment.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--fsdd-root", type=Path, required=True)
    parser.add_argument("--max-steps", type=int, default=30)
    arguments = parser.parse_args()
    directory = arguments.directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    record(directory, "start")

    import torch

    torch.set_num_threads(1)  # the same in every process (and two runs can share a small machine)
    record_every_load(directory)
    delay = float(os.environ.get(SAVE_DELAY_VARIABLE) or 0)
    if delay > 0:
        slow_down_saves(delay)
    on_fit_start = lambda trainer: record(directory, "fit_start", global_step=trainer.state.global_step)
    results = train(directory, arguments.fsdd_root, arguments.max_steps, on_fit_start)
    final = f"step-{results['global_step']:09d}"  # the Trainer's checkpoint_name() at the end
    marker = directory / FINISHED_FILE
    partial = marker.with_name(marker.name + ".partial")
    partial.write_text(json.dumps({"checkpoint": final, "time": time.time()}) + "\n", encoding="utf-8")
    os.replace(partial, marker)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's cadence, wherever it runs from
    main()
