"""sync() across two real gloo processes equals one process fed the union of their data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cadence.metrics import ConfusionMatrix, F1Score, Mean

WORLD_SIZE = 2
# Deliberately uneven shares: rank 0 sees 6 examples in two batches, rank 1 sees 4 in one.
TARGETS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDICTIONS = [0, 0, 0, 1, 1, 1, 2, 2, 0, 1]
SHARES = {0: [slice(0, 3), slice(3, 6)], 1: [slice(6, 10)]}


def build_metrics():
    return {
        "confusion": ConfusionMatrix(num_classes=3, per_class=True),
        "f1": F1Score(num_classes=3, average="weighted"),
        "loss": Mean("loss"),
    }


def feed(metrics, part: slice) -> None:
    targets, predictions = torch.tensor(TARGETS[part]), torch.tensor(PREDICTIONS[part])
    metrics["confusion"].update(predictions, targets)
    metrics["f1"].update(predictions, targets)
    # A per-batch mean "loss" weighted by batch size: the mean of the targets stands in for it.
    metrics["loss"].update(targets.double().mean(), weight=len(targets))


def results_of(metrics) -> dict:
    results = {key: metric.compute() for key, metric in metrics.items()}
    results["matrix"] = metrics["confusion"].matrix()
    return results


def run_rank(rank: int, store_file: str, output_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        metrics = build_metrics()
        for part in SHARES[rank]:
            feed(metrics, part)
        for metric in metrics.values():
            metric.sync()
        Path(output_dir, f"rank{rank}.json").write_text(json.dumps(results_of(metrics)))
    finally:
        dist.destroy_process_group()


def test_sync_over_two_gloo_processes_equals_single_process_on_the_union(tmp_path):
    mp.spawn(run_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)

    single = build_metrics()
    feed(single, slice(0, len(TARGETS)))
    expected = results_of(single)
    assert expected["matrix"] == [[3, 1, 0], [0, 2, 1], [1, 1, 1]]
    assert math.isclose(expected["loss"]["loss"], sum(TARGETS) / len(TARGETS))

    for rank in range(WORLD_SIZE):
        synced = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert synced["matrix"] == expected["matrix"]
        for key in ("confusion", "f1", "loss"):
            assert synced[key].keys() == expected[key].keys()
            for name, value in expected[key].items():
                assert math.isclose(synced[key][name], value, rel_tol=1e-12), (rank, key, name)
