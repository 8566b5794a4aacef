"""Padding of batch plans on FSDD connected digits, at the same padded-frame budget.

For each ordering, the training set's epoch-1 plan is built (as a training run would) and
measured: the fraction of frames in the padded batches that are padding, the number of
batches, the mean batch size, and how batch order relates to length (Spearman rank
correlation between a batch's position and its longest utterance: near 0 when batch order
is shuffled, 1 when sorted). Target (issue 3): ``buckets`` pads <= 2% with shuffled batch
order at the default budget.

    python benchmarks/padding.py [--max-frames 6000 10000 20000] [--seed 0]

Prints one JSON object. The corpus is generated once into the cache (see
``cadence.corpora.connected_digits``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cadence.corpora.connected_digits import prepare_connected_digits  # noqa: E402
from cadence.data.manifest import Manifest  # noqa: E402
from cadence.data.sampler import BatchingOptions, build_plan  # noqa: E402

# laplace:N with bins of ~500 utterances (RETURNN recipes use bins of hundreds to thousands).
ORDERINGS = ["random", "sorted", "laplace:8", "buckets"]


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    ranks = lambda values: np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return float(np.corrcoef(ranks(first), ranks(second))[0, 1])


def measure(durations: np.ndarray, ordering: str, max_frames: int, seed: int) -> dict:
    # max_seqs is left out of the way so that only the frame budget shapes batches.
    options = BatchingOptions(max_frames=max_frames, max_seqs=100_000, ordering=ordering)
    plan = build_plan(durations, options, seed=seed, epoch=1)
    longest = np.array([batch.max() for batch in np.split(plan.durations, plan.bounds[1:-1])])
    return {
        "padding_fraction": round(plan.padding_fraction(options.frames_per_second), 4),
        "batches": len(plan),
        "mean_batch_size": round(plan.num_segments / len(plan), 1),
        "order_length_correlation": round(rank_correlation(np.arange(len(plan)), longest), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-frames", type=int, nargs="+", default=[6000, 10000, 20000])
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    manifest = Manifest.read(prepare_connected_digits()["train"])
    durations = manifest.durations
    report = {
        "corpus": {"name": "fsdd connected digits (train)", "utterances": len(manifest),
                   "hours": round(float(durations.sum()) / 3600, 3),
                   "duration_s": {"min": round(float(durations.min()), 3), "median": round(float(np.median(durations)), 3),
                                  "max": round(float(durations.max()), 3)}},
        "frames_per_second": 100,
        "num_buckets": BatchingOptions().num_buckets,
        "plans": {
            str(max_frames): {ordering: measure(durations, ordering, max_frames, arguments.seed) for ordering in ORDERINGS}
            for max_frames in arguments.max_frames
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
