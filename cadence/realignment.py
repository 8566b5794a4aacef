"""The ``realign`` stage function: RETURNN's realignment pipeline as a step between stages.

A recipe trains a CTC model, then lists a stage that starts with ``function: realign``::

    stages:
      - {epochs: 5}                          # CTC
      - {epochs: 2, function: realign}       # frame-wise cross-entropy against the alignments
      - {function: realign}                  # realign with the frame-wise model, and train again

When such a stage starts, :func:`realign` takes the current model (CTC or frame-wise: the
same ``forward_batch``), in eval mode and without gradients, over EVERY training utterance
once, whole, in length order (the training loader's evaluation pass, not the epoch's
shuffled plan; SpecAugment is off in eval mode), and over the validation data. It
force-aligns each utterance to its reference tokens
(:func:`cadence.decoding.force_align`), writes the paths as the ``alignment`` field of two
manifests in the run folder, ``alignments/epoch-<N>-train.jsonl`` and
``alignments/epoch-<N>-valid.jsonl`` (``N``: the 1-based epoch the stage starts at, so the
model is the one trained through epoch ``N - 1``; written atomically), and returns::

    {"task.name": "framewise", "task.alignments": ".../epoch-N-train.jsonl",
     "task.valid_alignments": ".../epoch-N-valid.jsonl"}

so the stage trains :class:`cadence.tasks.framewise.FramewiseTask` against the new
alignments, every tensor carried over. (Another task's name starts the task section afresh:
settings such as ``task.decoding`` go in the stage's own overrides.) The overrides are saved in the checkpoints: a run
resumed inside the stage uses them and does not realign again. The paths are absolute, inside
the run folder (a run folder moved by hand needs ``task.alignments`` set again on resume).

An utterance whose reference needs more output frames than the model gives (one per token,
plus one between repeats: a model with too large a time stride) cannot be aligned; the
pass fails with an error naming such utterances rather than train without them. Training
audio the loader skipped as unusable has no alignment (training never meets it either).

It needs a run folder (``cadence train`` always has one), a training loader of cadence's data
pipeline (an ``AudioDataLoader``) and a transcription task. Under several processes
(torch.distributed) it refuses to run: each process has its own share of the validation data
and only rank 0 a run folder, so the alignments would have to be gathered and the paths
broadcast, which is not done yet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from cadence.data.manifest import Manifest, write_manifest
from cadence.decoding.alignment import force_align
from cadence.errors import ConfigError, DataError
from cadence.registry import STAGE_FUNCTIONS
from cadence.runtime.device import move_to_device
from cadence.runtime.distributed import world_size
from cadence.runtime.logs import get_logger
from cadence.tasks import framewise  # noqa: F401  (registers the framewise task and the frame_accuracy metric)

__all__ = ["align_utterances", "realign"]

TASK_NAME = "framewise"  # FramewiseTask's name in TASKS


@contextlib.contextmanager
def evaluation_mode(task: nn.Module) -> Iterator[None]:
    """``task`` in eval mode (no dropout, batch norm's running statistics, no SpecAugment) and
    no gradients; its mode is put back after. The global random generators are left as they
    were: a DataLoader iterator draws a seed from them."""
    was_training = task.training
    task.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            yield
    finally:
        task.train(was_training)


def align_utterances(task: nn.Module, batches: Iterable, device: torch.device) -> dict[str, list[int]]:
    """``{id: path}``: the best CTC path of each utterance's reference tokens under ``task``'s
    model (model classes: blank 0, token id + 1). Utterances that cannot be aligned are one
    :class:`DataError` naming them."""
    paths: dict[str, list[int]] = {}
    failures: list[str] = []
    for batch in batches:
        if len(batch) == 0:
            continue  # every utterance of the batch was unusable audio
        batch = move_to_device(batch, device)
        log_probs, output_lengths = task.forward_batch(batch)  # [B, T', C], [B]
        log_probs = log_probs.cpu()  # one copy per batch: the Viterbi runs on the host
        classes, target_lengths = task.target_classes(batch)  # [B, U] token id + 1, [B]
        for row, (key, frames, tokens) in enumerate(zip(batch.ids, output_lengths.tolist(), target_lengths.tolist())):
            try:
                paths[key] = force_align(log_probs[row, :frames], classes[row, :tokens]).path
            except ValueError as error:
                failures.append(f"{key!r} ({error})")
    if failures:
        raise DataError(
            f"realign: {len(failures)} utterance(s) cannot be aligned, e.g. {'; '.join(failures[:3])}; a model whose time "
            "stride leaves fewer output frames than a reference needs cannot align it: lower model.time_stride, or leave "
            "such utterances out of the data"
        )
    return paths


def write_alignments(path: Path, manifest: Manifest, paths: dict[str, list[int]]) -> int:
    """The lines of ``manifest`` that were aligned, in its order, with their ``alignment``."""
    entries = [dataclasses.replace(manifest.entry(index), alignment=paths[key])
               for index, key in enumerate(manifest.ids) if key in paths]
    write_manifest(path, entries)  # atomic: a crash leaves no half-written manifest
    return len(entries)


def dataset_manifest(loader: Any, what: str) -> Manifest:
    manifest = getattr(getattr(loader, "dataset", None), "manifest", None)
    if not isinstance(manifest, Manifest):
        raise ConfigError(f"realign reads the {what} data's manifest: it needs cadence's speech data (an AudioDataLoader "
                          f"over an AudioDataset), got {type(loader).__name__}")
    return manifest


@STAGE_FUNCTIONS.register("realign")
def realign(epoch: int, trainer: Any) -> dict[str, Any]:
    """Force-align the training and validation data with the current model, write the
    manifests into the run folder, and return the overrides of a frame-wise stage (see the
    module docstring)."""
    if world_size() > 1:
        raise ConfigError("realign runs in one process only: train a recipe with a realign stage without torchrun")
    if trainer.experiment is None:
        raise ConfigError("realign writes its alignment manifests into the run folder: train with one (cadence train "
                          "makes one; in Python, Trainer(..., experiment=Experiment(DIR)))")
    task = trainer.task
    if not callable(getattr(task, "forward_batch", None)) or not callable(getattr(task, "target_classes", None)):
        raise ConfigError(f"realign needs a CTC or framewise task (forward_batch, target_classes), got {type(task).__name__}")
    train_manifest = dataset_manifest(trainer.train_loader, "training")
    folder = Path(trainer.experiment.directory) / "alignments"
    started = time.perf_counter()
    with evaluation_mode(task):
        # The training loader's evaluation pass: every utterance once, whole, in length order,
        # without touching the training position (a loader of its own).
        train_paths = align_utterances(task, trainer.train_loader.statistics_pass(), trainer.device)
        valid_paths = None
        if trainer.val_data is not None:
            valid_manifest = dataset_manifest(trainer.val_data, "validation")
            valid_paths = align_utterances(task, trainer.val_data, trainer.device)
    overrides: dict[str, Any] = {"task.name": TASK_NAME, "task.alignments": str(folder / f"epoch-{epoch}-train.jsonl")}
    written = write_alignments(Path(overrides["task.alignments"]), train_manifest, train_paths)
    counts = f"{written} of {len(train_manifest)} training utterances"
    if valid_paths is not None:
        overrides["task.valid_alignments"] = str(folder / f"epoch-{epoch}-valid.jsonl")
        valid_written = write_alignments(Path(overrides["task.valid_alignments"]), valid_manifest, valid_paths)
        counts += f" and {valid_written} validation utterances"
    get_logger().info("realign: aligned %s with the model of epoch %d in %.1f s; wrote %s", counts, epoch - 1,
                      time.perf_counter() - started, folder)
    return overrides
