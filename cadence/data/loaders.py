"""Data set builders a recipe names under ``data:``: manifests in, DataLoaders out.

``manifest_classification`` reads any train/valid/test JSON Lines manifests with a
``label`` per line; ``fsdd`` first writes FSDD's manifests into the experiment folder
and then does the same. Both return a :class:`cadence.build.DataBundle`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from cadence.corpora.fsdd import prepare_fsdd
from cadence.data.dataset import AudioClassificationDataset, collate_audio
from cadence.data.manifest import ManifestEntry, read_labels, read_manifest
from cadence.errors import DataError


def _subset(entries: list[ManifestEntry], limit: int | None, seed: int) -> list[ManifestEntry]:
    """A seeded random subset, kept in manifest order (for quick runs and tests)."""
    if limit is None or limit >= len(entries):
        return entries
    chosen = np.random.default_rng(seed).choice(len(entries), size=limit, replace=False)
    return [entries[index] for index in sorted(chosen)]


def _loader(dataset: AudioClassificationDataset, batch_size: int, shuffle: bool, num_workers: int, seed: int) -> DataLoader:
    # A generator of our own makes the shuffling order a function of the seed alone.
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate_audio,
        num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
    )


def manifest_classification(
    work_dir: Path,
    seed: int,
    train: str,
    valid: str | None = None,
    test: str | None = None,
    labels: str | None = None,
    sample_rate: int = 16000,
    batch_size: int = 32,
    eval_batch_size: int = 128,
    num_workers: int = 0,
    preload: bool = True,
    max_train_utterances: int | None = None,
    max_eval_utterances: int | None = None,
):
    """Classification loaders from manifests; classes from ``labels`` (a JSON list) or the train labels."""
    from cadence.build import DataBundle  # late import: build imports this module's registry entry

    paths = {"train": Path(train), "valid": Path(valid) if valid else None, "test": Path(test) if test else None}
    entries = {split: read_manifest(path) for split, path in paths.items() if path is not None}
    if labels is not None:
        class_names = read_labels(labels)
    else:
        class_names = sorted({entry.label for entry in entries["train"] if entry.label is not None})
    if not class_names:
        raise DataError(f"{paths['train']}: no 'label' fields found; a classification manifest needs a label per line")
    label_to_index = {name: index for index, name in enumerate(class_names)}
    loaders = {}
    for split, split_entries in entries.items():
        limit = max_train_utterances if split == "train" else max_eval_utterances
        dataset = AudioClassificationDataset(_subset(split_entries, limit, seed), label_to_index, sample_rate, preload=preload)
        is_train = split == "train"
        loaders[split] = _loader(dataset, batch_size if is_train else eval_batch_size, is_train, num_workers, seed)
    return DataBundle(
        train=loaders["train"], valid=loaders.get("valid"), test=loaders.get("test"),
        facts={"num_classes": len(class_names), "class_names": class_names, "sample_rate": sample_rate},
        manifests={split: path for split, path in paths.items() if path is not None},
    )


def fsdd(
    work_dir: Path,
    seed: int,
    task: Literal["digits", "speakers"] = "digits",
    root: str | None = None,
    valid_takes: list[int] = [5, 6, 7, 8, 9],
    batch_size: int = 32,
    eval_batch_size: int = 150,
    num_workers: int = 0,
    max_train_utterances: int | None = None,
    max_eval_utterances: int | None = None,
):
    """FSDD digits (10 classes) or speakers (6 classes) on the official split.

    Manifests are written to ``work_dir`` (the experiment's ``data/`` folder), so the run
    records exactly which files it used. ``root=None`` finds the corpus: ../shared beside the
    checkout, ``CADENCE_FSDD_ROOT``, the download cache, or a download.
    """
    written = prepare_fsdd(root, Path(work_dir) / "fsdd", valid_takes=valid_takes)[task]
    return manifest_classification(
        work_dir, seed, train=str(written["train"]), valid=str(written["valid"]), test=str(written["test"]),
        labels=str(written["train"].parent / "labels.json"), sample_rate=8000, batch_size=batch_size,
        eval_batch_size=eval_batch_size, num_workers=num_workers,
        max_train_utterances=max_train_utterances, max_eval_utterances=max_eval_utterances,
    )
