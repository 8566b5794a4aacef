"""The recipe's ``fsdd`` data (FSDD's manifests written, or the connected-digits corpus
generated) and ``librispeech`` data (subsets downloaded once), then read by the generic
``manifests`` builder (:mod:`cadence.data.builders`).

It lives with the corpora, above the data pipeline: the corpora use the pipeline's manifests,
and the pipeline knows no corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Len, MinLen

from cadence.bounds import NonNegativeInt, PositiveInt, Probability, Seed
from cadence.corpora.connected_digits import prepare_connected_digits
from cadence.corpora.fsdd import prepare_fsdd
from cadence.corpora.librispeech import OPENSLR_URL, prepare_librispeech
from cadence.data.builders import manifests
from cadence.data.processor import TargetKind
from cadence.data.sampler import BatchingOptions
from cadence.data.tokenizers import TokenizerOptions
from cadence.registry import DATASETS

__all__ = ["fsdd", "librispeech"]


@DATASETS.register("fsdd")
def fsdd(
    work_dir: Path,
    seed: int,
    experiment_dir: Path | None,
    task: Literal["digits", "speakers", "connected-digits"] = "digits",
    root: str | None = None,
    valid_takes: Annotated[list[NonNegativeInt], MinLen(1)] = [5, 6, 7, 8, 9],
    corpus_seed: Seed = 0,
    corpus_sizes: Annotated[list[PositiveInt], Len(3, 3)] = [4000, 500, 500],  # train, valid, test
    tokenizer: TokenizerOptions = TokenizerOptions(kind="word"),
    batching: BatchingOptions = BatchingOptions(max_frames=None, max_seqs=32, ordering="random"),
    eval_batching: BatchingOptions | None = None,
    num_workers: NonNegativeInt = 0,
    preload: bool = True,
    max_skip_rate: Probability = 0.01,
    max_train_utterances: PositiveInt | None = None,
    max_eval_utterances: PositiveInt | None = None,
    labelled_per_class: PositiveInt | None = None,
):
    """FSDD digits (10 classes), speakers (6 classes) or connected digits (transcripts).

    Manifests are written to ``work_dir`` (the experiment's ``data/`` folder), so the run
    records exactly which files it used. ``root=None`` finds the corpus: ../shared beside the
    checkout, ``CADENCE_FSDD_ROOT``, the download cache, or a download. ``connected-digits``
    audio is generated once per (``corpus_seed``, ``corpus_sizes``) into the cache
    (see :mod:`cadence.corpora.connected_digits`); ``tokenizer`` applies to it only (words
    by default: one token per spoken digit).

    The default batching (32 shuffled utterances) suits the classification tasks, where an
    utterance's length says much about its class; for connected digits, set a frame budget
    and ``ordering: buckets``. ``labelled_per_class`` (digits and speakers): train on that
    many utterances of each class, drawn with the run's seed.
    """
    if task == "connected-digits":
        # Generated once into the cache and shared by every run with the same corpus options.
        written = prepare_connected_digits(root, seed=corpus_seed, sizes=tuple(corpus_sizes))
        target, labels = "text", None
    else:
        written = prepare_fsdd(root, Path(work_dir) / "fsdd", valid_takes=valid_takes)[task]
        target, labels = "label", str(written["train"].parent / "labels.json")
    return manifests(
        work_dir, seed, experiment_dir, train=str(written["train"]), valid=str(written["valid"]), test=str(written["test"]),
        target=target, labels=labels, tokenizer=tokenizer, sample_rate=8000, batching=batching, eval_batching=eval_batching,
        num_workers=num_workers, preload=preload, max_skip_rate=max_skip_rate,
        max_train_utterances=max_train_utterances, max_eval_utterances=max_eval_utterances,
        labelled_per_class=labelled_per_class,
    )


@DATASETS.register("librispeech")
def librispeech(
    work_dir: Path,
    seed: int,
    experiment_dir: Path | None,
    root: str = "data/librispeech",
    train: str = "train-clean-5",
    valid: str | None = "dev-clean-2",
    test: str | None = None,
    url: str = OPENSLR_URL,
    md5s: dict[str, str | None] | None = None,
    target: TargetKind = "text",
    tokenizer: TokenizerOptions = TokenizerOptions(kind="char"),
    batching: BatchingOptions = BatchingOptions(),
    eval_batching: BatchingOptions | None = None,
    num_workers: NonNegativeInt = 2,
    preload: bool = False,
    max_skip_rate: Probability = 0.01,
    max_train_utterances: PositiveInt | None = None,
    max_eval_utterances: PositiveInt | None = None,
):
    """LibriSpeech or Mini LibriSpeech (16 kHz): ``train``, ``valid`` and ``test`` name subsets
    (``train-clean-5`` and ``dev-clean-2`` are Mini LibriSpeech), downloaded once into ``root``
    from ``url`` (OpenSLR, or a mirror laid out like it) and checked against ``md5s`` (OpenSLR's
    published sums by default; see :mod:`cadence.corpora.librispeech`). The manifests are
    copied into ``work_dir``, so the run records the files it used. ``target: text`` (the
    transcripts, characters by default) or ``none`` (the audio alone, for self-supervised training).
    """
    splits = {"train": train, "valid": valid, "test": test}
    written = prepare_librispeech(sorted({subset for subset in splits.values() if subset}), root, url=url, md5s=md5s,
                                  manifest_dir=Path(work_dir) / "librispeech")
    paths = {split: str(written[subset]) if subset else None for split, subset in splits.items()}
    return manifests(
        work_dir, seed, experiment_dir, train=paths["train"], valid=paths["valid"], test=paths["test"], target=target,
        tokenizer=tokenizer, sample_rate=16000, batching=batching, eval_batching=eval_batching, num_workers=num_workers,
        preload=preload, max_skip_rate=max_skip_rate, max_train_utterances=max_train_utterances,
        max_eval_utterances=max_eval_utterances,
    )
