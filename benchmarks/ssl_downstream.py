"""What self-supervised pretraining is worth downstream: FSDD speaker identification and digit
recognition from 1, 5 and 20 labelled utterances per class (issue 14).

First the PASE+ encoder pretrains without labels (``recipes/fsdd/pase.yaml``; its wall time is
reported), unless ``--pretrained DIR`` names a finished run. Then, for each task, number of
labelled utterances and seed, four models train on the same labelled utterances (drawn with the
seed) and are tested on FSDD's official test takes:

- ``frozen``: a classifier on the frozen pretrained encoder;
- ``finetuned``: the same, the encoder fine-tuned at a tenth of the head's rate;
- ``logmel``: the same classifier (pooling and MLP) on 40 log-mel bands, normalized with the mean
  and variance of the labelled training utterances (the encoder's frames come out of a
  normalization too; raw log-mel values, around -10, leave the MLP far behind);
- ``scratch``: the encoder and classifier trained from random weights.

Target: ``frozen`` or ``finetuned`` ahead of both ``logmel`` and ``scratch`` at 1 and 5 per class,
by a margin larger than the spread (max - min) over the seeds of either side.

    python benchmarks/ssl_downstream.py [--pretrained DIR] [--tasks speakers digits] [--shots 1 5 20]
                                        [--seeds 0 1 2] [--variants ...] [--keep DIR]

Each run is a whole ``cadence train`` process. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
RECIPES = REPOSITORY / "recipes" / "fsdd"
VARIANTS = {
    "frozen": [],
    "finetuned": ["model.freeze_encoder=false", "optimizer.groups=[{params: 'encoder.*', lr: 1.0e-4}]"],
    "logmel": ["preload=[]", "features=[{name: log_mel, n_mels: 40}, {name: normalize, mode: global}]",
               "model.encoder={name: feature_frames, size: 40}"],
    "scratch": ["preload=[]", "model.freeze_encoder=false"],
}
PRETRAINED_VARIANTS = ("frozen", "finetuned")
TARGET_SHOTS = (1, 5)


def train(recipe: Path, overrides: list[str], directory: Path) -> tuple[dict, float]:
    command = [sys.executable, "-m", "cadence", "train", str(recipe), "trainer.progress_bar=false", *overrides,
               "--exp-dir", str(directory)]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return json.loads((directory / "results.json").read_text()), wall


def worker_losses(directory: Path) -> dict[str, list[float]]:
    """Each worker's validation loss at each epoch of the pretraining (issue 14: each falls)."""
    curves: dict[str, list[float]] = {}
    for line in (directory / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key.startswith("val/loss_"):
                curves.setdefault(key.removeprefix("val/loss_"), []).append(round(value, 5))
    return curves


def spread_summary(accuracies: list[float]) -> dict:
    return {"median": round(statistics.median(accuracies), 4), "min": round(min(accuracies), 4),
            "max": round(max(accuracies), 4), "by_seed": [round(value, 4) for value in accuracies]}


def verdict(cells: dict[str, dict]) -> dict:
    """Whether the best pretrained variant's median is ahead of each baseline's by more than the
    larger of the two spreads over seeds."""
    pretrained = max((cells[name] for name in PRETRAINED_VARIANTS if name in cells), key=lambda cell: cell["median"], default=None)
    baselines = [cells[name] for name in ("logmel", "scratch") if name in cells]
    if pretrained is None or not baselines:
        return {"ahead": None}
    margins = [pretrained["median"] - baseline["median"] for baseline in baselines]
    spreads = [max(pretrained["max"] - pretrained["min"], baseline["max"] - baseline["min"]) for baseline in baselines]
    return {"ahead": all(margin > spread for margin, spread in zip(margins, spreads)),
            "margins": [round(margin, 4) for margin in margins], "spreads": [round(spread, 4) for spread in spreads]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", type=Path, help="a finished recipes/fsdd/pase.yaml run (else one is trained)")
    parser.add_argument("--tasks", nargs="+", default=["speakers", "digits"], choices=["speakers", "digits"])
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5, 20])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder")
    arguments = parser.parse_args()
    root = arguments.keep or Path(tempfile.mkdtemp(prefix="cadence-ssl-"))
    report: dict = {"benchmark": "ssl_downstream", "cpu_count": os.cpu_count()}
    pretrained = arguments.pretrained
    if pretrained is None:
        pretrained = root / "pase"
        results, wall = train(RECIPES / "pase.yaml", [], pretrained)
        report["pretraining"] = {"wall_s": round(wall, 1), "epochs": results["epochs_completed"]}
    report["pretraining_worker_val_losses"] = worker_losses(pretrained)
    report["results"] = {}
    for task in arguments.tasks:
        for shots in arguments.shots:
            cells = {}
            for variant in arguments.variants:
                accuracies = []
                for seed in arguments.seeds:
                    directory = root / f"{task}-{shots}-{variant}-seed{seed}"
                    overrides = [f"seed={seed}", f"data.labelled_per_class={shots}", *VARIANTS[variant]]
                    if variant in PRETRAINED_VARIANTS:
                        overrides.append(f"preload.0.path={pretrained}")
                    results, _ = train(RECIPES / f"pase_{task}.yaml", overrides, directory)
                    accuracies.append(results["test"]["test/accuracy"])
                cells[variant] = spread_summary(accuracies)
            report["results"][f"{task}/{shots}"] = {**cells, **({"target": verdict(cells)} if shots in TARGET_SHOTS else {})}
            print(json.dumps({f"{task}/{shots}": report["results"][f"{task}/{shots}"]}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
