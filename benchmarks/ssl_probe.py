"""What the pretrained PASE+ encoder's frames hold, with the classifier's training taken out of
the comparison: a linear probe against log-mel features (issue 14).

``benchmarks/ssl_downstream.py`` trains an MLP head for 30 epochs, which at 1 labelled utterance
a class is 30 updates: how far the head gets counts as much as the features. Here both feature
kinds go through the same steps, each run to convergence:

1. each FSDD utterance alone (no padding) through the frozen encoder (``--pretrained``: a
   ``recipes/fsdd/pase.yaml`` run, its newest checkpoint, as the downstream recipes' ``preload``
   reads it), or through 40 log-mel bands;
2. the mean and standard deviation of its frames (the downstream pooling);
3. those vectors standardized with the statistics of every training utterance (no label read);
4. a multinomial logistic regression (L2 penalty, L-BFGS to convergence) on N labelled training
   utterances a class, tested on FSDD's official test takes (300).

``--draws`` sets of labelled utterances for each N, so the median and range are over many draws,
not three seeds. Both tasks share the pooled vectors.

    python benchmarks/ssl_probe.py --pretrained DIR [--shots 1 5 20] [--draws 20]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import cadence
from cadence.checkpoint.checkpointer import find_checkpoint
from cadence.corpora.fsdd import prepare_fsdd
from cadence.data.audio import load_audio
from cadence.data.features import LogMel
from cadence.data.manifest import read_manifest
from cadence.models.encoder_classifier import mean_and_std_pooling

SAMPLE_RATE = 8000
TASK_LABELS = {"speakers": "speaker", "digits": "text"}  # the manifest field each task classifies


@torch.no_grad()
def pooled(frames_of, waveforms: list[torch.Tensor]) -> torch.Tensor:
    """``[utterances, 2 D]``: each utterance's frames ``[D, T]`` pooled to their mean and std."""
    return torch.cat([mean_and_std_pooling(*frames_of(waveform[None], torch.tensor([waveform.numel()]))) for waveform in waveforms])


def logistic_regression(inputs: torch.Tensor, targets: torch.Tensor, classes: int, penalty: float = 0.5) -> torch.nn.Linear:
    """Summed cross-entropy plus ``penalty * |W|^2`` (scikit-learn's default, C=1), to convergence."""
    model = torch.nn.Linear(inputs.shape[1], classes)
    torch.nn.init.zeros_(model.weight)  # L-BFGS from zero weights: no seed enters the result
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=500, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets, reduction="sum") + penalty * model.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return model


def probe(train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor, test_labels: np.ndarray,
          shots: int, draws: int) -> dict:
    """Test accuracy over ``draws`` draws of ``shots`` labelled training utterances a class."""
    names = sorted(set(train_labels))
    train_targets = torch.tensor([names.index(label) for label in train_labels])
    test_targets = torch.tensor([names.index(label) for label in test_labels])
    accuracies = []
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        chosen = np.concatenate([rng.choice(np.flatnonzero(train_labels == name), size=shots, replace=False) for name in names])
        model = logistic_regression(train[chosen], train_targets[chosen], len(names))
        with torch.no_grad():
            accuracies.append(float((model(test).argmax(1) == test_targets).float().mean()))
    return {"median": round(statistics.median(accuracies), 4), "min": round(min(accuracies), 4),
            "max": round(max(accuracies), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", type=Path, required=True, help="a finished recipes/fsdd/pase.yaml run")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_LABELS), choices=list(TASK_LABELS))
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5, 20])
    parser.add_argument("--draws", type=int, default=20)
    arguments = parser.parse_args()
    started = time.perf_counter()
    manifests = prepare_fsdd(None, tempfile.mkdtemp(prefix="cadence-probe-"))["speakers"]  # every entry has speaker and text
    entries = {split: read_manifest(manifests[split]) for split in ("train", "test")}
    waveforms = {split: [load_audio(entry.audio, SAMPLE_RATE) for entry in rows] for split, rows in entries.items()}
    encoder = cadence.load(find_checkpoint(arguments.pretrained)).model  # the task's model: the encoder, in eval mode
    features = {"encoder": encoder, "logmel": LogMel(sample_rate=SAMPLE_RATE, n_mels=40)}
    report: dict = {"benchmark": "ssl_probe", "pretrained": str(arguments.pretrained), "cpu_count": os.cpu_count(),
                    "draws": arguments.draws, "results": {}}
    for kind, frames_of in features.items():
        train, test = pooled(frames_of, waveforms["train"]), pooled(frames_of, waveforms["test"])
        mean, std = train.mean(0), train.std(0) + 1e-6  # every training utterance, labelled or not
        train, test = (train - mean) / std, (test - mean) / std
        for task in arguments.tasks:
            field = TASK_LABELS[task]
            labels = {split: np.array([getattr(entry, field) for entry in rows]) for split, rows in entries.items()}
            for shots in arguments.shots:
                cell = report["results"].setdefault(f"{task}/{shots}", {})
                cell[kind] = probe(train, labels["train"], test, labels["test"], shots, arguments.draws)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
