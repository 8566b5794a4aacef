"""Data set builders a recipe names under ``data:``: manifests in, loaders out.

``manifests`` reads any train/valid/test JSON Lines manifests (``fsdd``, in
:mod:`cadence.corpora.builders`, writes FSDD's manifests first and then calls it). It returns
a :class:`cadence.registry.DataBundle`
whose loaders are :class:`~cadence.data.loader.AudioDataLoader` objects:

- training: batches planned by ``batching`` (a :class:`~cadence.data.sampler.BatchingOptions`),
  bad audio skipped into ``EXP_DIR/quarantine.jsonl`` within ``max_skip_rate``;
- validation and test: every utterance, ``sorted`` by length (least padding), with the
  same frame budget unless ``eval_batching`` says otherwise; bad audio is an error.

Facts for the other components: ``num_classes`` and ``class_names`` for labels;
``tokenizer`` and ``num_classes = len(tokenizer) + 1`` for text (class 0 is the models'
blank or end of sentence); ``sample_rate`` always.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from cadence.bounds import NonNegativeFloat, NonNegativeInt, PositiveInt, Probability
from cadence.data.audio import MonoPolicy
from cadence.data.dataset import AudioDataset
from cadence.data.loader import AudioDataLoader, Quarantine
from cadence.data.manifest import Manifest, read_labels
from cadence.data.processor import AudioDataProcessor, TargetKind
from cadence.data.sampler import BatchingOptions, BatchSampler
from cadence.data.tokenizers import TokenizerOptions, build_tokenizer
from cadence.errors import ConfigError, DataError
from cadence.registry import DATASETS, DataBundle

__all__ = ["fsdd", "manifests"]

SPLITS = ("train", "valid", "test")


def _subset(manifest: Manifest, limit: int | None, seed: int) -> Manifest:
    """A seeded random subset, kept in manifest order (for quick runs and tests)."""
    if limit is None or limit >= len(manifest):
        return manifest
    chosen = np.random.default_rng(seed).choice(len(manifest), size=limit, replace=False)
    return manifest.subset(np.sort(chosen))


def _labelled_per_class(manifest: Manifest, per_class: int | None, seed: int) -> Manifest:
    """``per_class`` utterances of each label, drawn with ``seed`` and kept in manifest order
    (few-label training: the same seed gives the same utterances, whatever else changes)."""
    if per_class is None:
        return manifest
    labels = list(manifest.labels)
    if not any(labels):
        raise DataError(f"{manifest.source}: labelled_per_class needs a 'label' per line (target: label)")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({label for label in labels if label}):
        members = np.array([index for index, own in enumerate(labels) if own == label])
        if len(members) < per_class:
            raise DataError(f"{manifest.source}: label {label!r} has {len(members)} training utterances, fewer than "
                            f"labelled_per_class = {per_class}; lower it")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return manifest.subset(np.sort(np.concatenate(chosen)))


def _evaluation_options(batching: BatchingOptions, eval_batching: BatchingOptions | None) -> BatchingOptions:
    if eval_batching is not None:
        return eval_batching
    return batching.for_evaluation()


def _processor_for(
    train: Manifest, work_dir: Path, target: TargetKind, labels: str | None, tokenizer_options: TokenizerOptions,
    **audio_policy,
) -> tuple[AudioDataProcessor, dict]:
    """The processor, and the facts other components need (classes or tokens)."""
    if target == "label":
        class_names = read_labels(labels) if labels else sorted({label for label in train.labels if label})
        if not class_names:
            raise DataError(f"{train.source}: no 'label' fields found; a classification manifest needs a label per line")
        processor = AudioDataProcessor(target=target, label_to_index={name: i for i, name in enumerate(class_names)}, **audio_policy)
        return processor, {"num_classes": len(class_names), "class_names": class_names}
    if target == "text":
        tokenizer = build_tokenizer(tokenizer_options, train.texts)
        tokenizer.save(Path(work_dir) / "tokenizer.json")  # the run records the token ids it trained with
        # Class 0 is the models' own (CTC blank, attention end of sentence): token t is class t + 1.
        facts = {"tokenizer": tokenizer, "num_classes": len(tokenizer) + 1}
        return AudioDataProcessor(target=target, tokenizer=tokenizer, **audio_policy), facts
    return AudioDataProcessor(target="none", **audio_policy), {}


@DATASETS.register("manifests")
def manifests(
    work_dir: Path,
    seed: int,
    experiment_dir: Path | None,
    train: str,
    valid: str | None = None,
    test: str | None = None,
    target: TargetKind = "label",
    labels: str | None = None,
    tokenizer: TokenizerOptions = TokenizerOptions(),
    sample_rate: PositiveInt = 16000,
    resample: bool = True,
    mono: MonoPolicy = "mix",
    min_duration: NonNegativeFloat = 0.0,
    batching: BatchingOptions = BatchingOptions(),
    eval_batching: BatchingOptions | None = None,
    num_workers: NonNegativeInt = 0,
    preload: bool = False,
    max_skip_rate: Probability = 0.01,
    max_train_utterances: PositiveInt | None = None,
    max_eval_utterances: PositiveInt | None = None,
    labelled_per_class: PositiveInt | None = None,
):
    """Loaders over JSON Lines manifests.

    ``target``: ``label`` (classes from ``labels``, a JSON list, or the sorted training
    labels), ``text`` (token ids from the tokenizer that ``tokenizer``, a
    :class:`~cadence.data.tokenizers.TokenizerOptions`, describes: built from the training
    transcripts or loaded from a file, and saved as ``work_dir/tokenizer.json``), or ``none``.
    Transcript characters (or words) the tokenizer does not know are an error here, listing
    them all, unless ``tokenizer.unknown`` is ``map``. ``labelled_per_class``: train on that
    many utterances of each label only, drawn with the run's ``seed`` (few-label experiments;
    ``target: label`` only); validation and test keep all theirs.
    """
    if labelled_per_class is not None and target != "label":
        raise ConfigError(f"data.labelled_per_class needs target: label (one label per utterance), got target: {target}")
    paths = {"train": Path(train), "valid": Path(valid) if valid else None, "test": Path(test) if test else None}
    read = {split: Manifest.read(path) for split, path in paths.items() if path is not None}
    processor, facts = _processor_for(
        read["train"], work_dir, target, labels, tokenizer,
        sample_rate=sample_rate, resample=resample, mono=mono, min_duration=min_duration,
    )
    # Each process meets the bad files of its own share; only rank 0 has an experiment folder
    # (the others' entries are gathered into its file at each epoch's end).
    quarantine = Quarantine(Path(experiment_dir) / "quarantine.jsonl" if experiment_dir else None, max_skip_rate)
    loaders = {}
    for split, manifest in read.items():
        is_train = split == "train"
        if is_train:
            manifest = _labelled_per_class(manifest, labelled_per_class, seed)
        manifest = _subset(manifest, max_train_utterances if is_train else max_eval_utterances, seed)
        dataset = AudioDataset(manifest, processor, preload=preload, skip_bad_audio=is_train)
        options = batching if is_train else _evaluation_options(batching, eval_batching)
        # Training shares are equal (wrapped) for DDP; evaluation shares never repeat a batch.
        sampler = BatchSampler(dataset.durations, options, seed=seed, equal_shares=is_train)
        loaders[split] = AudioDataLoader(
            dataset, sampler, num_workers=num_workers, quarantine=quarantine if is_train else None, resumable=is_train, name=split
        )
    return DataBundle(
        train=loaders["train"], valid=loaders.get("valid"), test=loaders.get("test"),
        facts={**facts, "sample_rate": sample_rate},
        manifests={split: path for split, path in paths.items() if path is not None},
    )
