"""One training process of the kill-and-resume test (tests/integration/test_kill_resume.py).

Not a test module: the test runs it as a program and SIGKILLs it at random moments.

    python tests/integration/kill_resume_worker.py EXP_DIR --fsdd-root ROOT [--max-steps 30]

It trains a small real model (FSDD audio through AudioDataLoader, log-mel and SpecAugment,
a CNN classifier with dropout, AdamW with a per-step schedule, a validation pass per epoch)
in the experiment folder EXP_DIR, saving a checkpoint after every step and keeping the last
two (and the best). When EXP_DIR already holds a checkpoint it resumes from it
(``Trainer.fit(..., resume_from=EXP_DIR)``). What it does is appended to
``EXP_DIR/events.jsonl``, one JSON object a line, for the test to check:

- ``{"event": "load", "path": ...}`` for every checkpoint it loads, written before loading;
- ``{"event": "fit_start", "global_step": ...}`` once resumed, before the first step;
- when ``fit`` returns, ``EXP_DIR/finished.json`` (the marker) names the final checkpoint.

``CADENCE_KILL_RESUME_SAVE_DELAY=SECONDS`` slows every save down, in this process only:
it sleeps before each file written into the ``.tmp-`` folder and after each rename to a
``.trash-`` name, so that a kill has a good chance of landing inside a save.
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
    """Wrap the checkpoint loader the Trainer calls, so every loaded path is on record."""
    import cadence.checkpoint
    import cadence.trainer

    load = cadence.checkpoint.load_checkpoint

    def recorded_load(folder, *arguments, **keywords):
        record(directory, "load", path=str(Path(folder).resolve()))
        return load(folder, *arguments, **keywords)

    cadence.checkpoint.load_checkpoint = recorded_load
    cadence.trainer.load_checkpoint = recorded_load


def slow_down_saves(seconds: float) -> None:
    """Widen the windows where a save is half done: files being written into the temporary
    folder, and an old checkpoint (or a deleted one) lying under its ``.trash-`` name."""
    import cadence.checkpoint

    write = cadence.checkpoint._write_durably
    rename = os.rename

    def slow_write(path, data):
        time.sleep(seconds)
        write(path, data)

    def slow_rename(source, destination, *arguments, **keywords):
        rename(source, destination, *arguments, **keywords)
        if Path(destination).name.startswith(cadence.checkpoint.TRASH_PREFIX):
            time.sleep(seconds)

    cadence.checkpoint._write_durably = slow_write
    os.rename = slow_rename  # this process only; cadence.checkpoint calls os.rename


def build_manifests(fsdd_root: Path):
    import soundfile

    from cadence.data.manifest import Manifest, ManifestEntry

    paths = sorted((fsdd_root / "recordings").glob("*.wav"))

    def entry(path: Path) -> ManifestEntry:
        return ManifestEntry(id=path.stem, audio=path, duration=soundfile.info(str(path)).duration, label=WORDS[int(path.name[0])])

    train = [entry(path) for path in paths[::61][:TRAIN_UTTERANCES]]
    valid = [entry(path) for path in paths[7::293][:VALID_UTTERANCES]]
    return Manifest(train), Manifest(valid)


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

    from cadence.callbacks import Callback
    from cadence.checkpoint import Checkpointer
    from cadence.checkpointing import CheckpointPolicy
    from cadence.data.dataset import AudioDataset
    from cadence.data.features import LogMel
    from cadence.data.loader import AudioDataLoader
    from cadence.data.pipeline import FeaturePipeline
    from cadence.data.processor import AudioDataProcessor
    from cadence.data.sampler import BatchingOptions, BatchSampler
    from cadence.data.spec_augment import SpecAugment
    from cadence.experiment import Experiment
    from cadence.models.cnn_classifier import CNNClassifier
    from cadence.rng import seed_everything
    from cadence.tasks import ClassificationTask
    from cadence.trainer import Trainer

    record_every_load(directory)
    delay = float(os.environ.get(SAVE_DELAY_VARIABLE) or 0)
    if delay > 0:
        slow_down_saves(delay)

    class RecordFitStart(Callback):
        def on_fit_start(self, trainer: Trainer) -> None:
            record(directory, "fit_start", global_step=trainer.state.global_step)

    torch.set_num_threads(1)  # the test may run beside other work on a small machine
    seed_everything(0)
    train_manifest, valid_manifest = build_manifests(arguments.fsdd_root)
    processor = AudioDataProcessor(8000, label_to_index={word: index for index, word in enumerate(WORDS)})
    train_set = AudioDataset(train_manifest, processor, skip_bad_audio=True)
    options = BatchingOptions(max_frames=None, max_seqs=BATCH_SIZE, ordering="random")
    train = AudioDataLoader(train_set, BatchSampler(train_set.durations, options, seed=0))
    valid_set = AudioDataset(valid_manifest, processor)
    valid = AudioDataLoader(valid_set, BatchSampler(valid_set.durations, BatchingOptions(ordering="sorted")), resumable=False)
    features = FeaturePipeline([LogMel(), SpecAugment(freq_width=6, time_width=8)])
    task = ClassificationTask(CNNClassifier(num_classes=10, channels=8, layers=2, dropout=0.3), features=features)
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.97)
    experiment = Experiment(directory, tensorboard=False)
    has_checkpoint = bool(Checkpointer(experiment.checkpoints_directory).list())
    try:
        trainer = Trainer(
            task, optimizer, scheduler=scheduler, scheduler_interval="step", max_epochs=1000,
            max_steps=arguments.max_steps, device="cpu", callbacks=[RecordFitStart()], experiment=experiment,
            log_every=5, progress_bar=False, checkpoint_policy=CheckpointPolicy(every_steps=1, keep_last=2),
        )
        results = trainer.fit(train, valid, resume_from=directory if has_checkpoint else None)
    finally:
        experiment.stop()
    marker = directory / FINISHED_FILE
    partial = marker.with_name(marker.name + ".partial")
    partial.write_text(json.dumps({"global_step": results["global_step"],
                                   "checkpoint": trainer.checkpoint_name()}) + "\n", encoding="utf-8")
    os.replace(partial, marker)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's cadence, wherever it runs from
    main()
