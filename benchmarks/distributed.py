"""DDP through cadence's Trainer against a hand-written DDP loop, at world sizes 1 and 2.

Both contenders train the same model (the digits recipe's CNN classifier, on fixed random
log-mel-shaped batches), from the same weights, over the same batches, inside one torchrun
launch per world size: round after round, alternating which goes first, so that machine
noise hits both alike. The hand-written loop is what a user writes with
``DistributedDataParallel`` directly: forward, cross-entropy, backward, step, zero_grad.
The figure of merit is the median over rounds of cadence's time per step divided by the hand
loop's; steps per second are the hand loop's and cadence's at each world size (gloo on CPU,
nccl on GPUs, one process per GPU).

    python benchmarks/distributed.py [--world-sizes 1 2] [--rounds 5] [--steps 40] [--batch 16]

Prints one JSON object. Run it alone: on a small machine any other process skews the times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from cadence import ClassificationTask, Trainer
from cadence.models.cnn_classifier import CNNClassifier
from cadence.runtime.distributed import all_gather_objects, init_from_environment, leave_process_group


def batches(steps: int, batch: int, rank: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1000 + rank)
    return [(torch.randn(batch, 40, 100, generator=generator).to(device), torch.randint(0, 10, (batch,), generator=generator).to(device))
            for _ in range(steps)]


class Model(torch.nn.Module):
    """The CNN classifier on full-length inputs (every frame valid)."""

    def __init__(self):
        super().__init__()
        self.cnn = CNNClassifier(n_mels=40, num_classes=10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.cnn(inputs, torch.full((inputs.shape[0],), inputs.shape[-1], device=inputs.device))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    torch.distributed.barrier() if torch.distributed.is_initialized() else None


def hand_loop(data, device) -> float:
    torch.manual_seed(0)
    model = Model().to(device)
    # As cadence does: one process needs no DDP (torchrun initialises a group of one all the same).
    ddp = DistributedDataParallel(model) if torch.distributed.get_world_size() > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    synchronize(device)
    started = time.perf_counter()
    for inputs, targets in data:
        loss = F.cross_entropy(ddp(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return (time.perf_counter() - started) / len(data)


def cadence_loop(data, device) -> float:
    torch.manual_seed(0)
    task = ClassificationTask(Model())
    trainer = Trainer(task, torch.optim.AdamW(task.parameters(), lr=1e-3), max_epochs=1, device=device,
                      progress_bar=False, log_every=10**9, restore_best=False)
    trainer.join_processes()  # the DDP wrap (done by fit) kept out of the timed steps, as above
    synchronize(device)
    started = time.perf_counter()
    trainer.fit(data)
    synchronize(device)
    return (time.perf_counter() - started) / len(data)


def worker(arguments) -> None:
    rank, world = init_from_environment()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    data = batches(arguments.steps, arguments.batch, rank, device)
    hand_loop(data[:5], device), cadence_loop(data[:5], device)  # warm-up: allocator, threads, DDP buckets
    rounds = []
    for index in range(arguments.rounds):
        order = [("hand", hand_loop), ("cadence", cadence_loop)][:: 1 if index % 2 == 0 else -1]
        rounds.append({name: run(data, device) for name, run in order})
    gathered = all_gather_objects(rounds)
    if rank == 0:
        # A step is as slow as its slowest process.
        per_round = [{name: max(ranks[i][name] for ranks in gathered) for name in ("hand", "cadence")} for i in range(arguments.rounds)]
        ratio = statistics.median(r["cadence"] / r["hand"] for r in per_round)
        hand = statistics.median(r["hand"] for r in per_round)
        ours = statistics.median(r["cadence"] for r in per_round)
        print(json.dumps({"world_size": world, "ratio_cadence_to_hand": ratio, "hand_steps_per_s": 1 / hand,
                          "cadence_steps_per_s": 1 / ours, "rounds": arguments.rounds, "steps": arguments.steps}))
    leave_process_group(finished=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        return worker(arguments)
    results = []
    for world in arguments.world_sizes:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}", __file__,
                   "--worker", "--rounds", str(arguments.rounds), "--steps", str(arguments.steps), "--batch", str(arguments.batch)]
        finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // world)))})
        if finished.returncode != 0:
            sys.exit(finished.stderr[-3000:])
        results.append(json.loads(finished.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "distributed", "machine": platform.processor() or platform.machine(),
                      "devices": torch.cuda.device_count() if torch.cuda.is_available() else "cpu",
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
