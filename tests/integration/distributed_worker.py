"""One process of the distributed tests (tests/integration/test_distributed.py), started by torchrun.

Not a test module: the tests run it as ``torchrun --nproc-per-node N distributed_worker.py SPECS OUT``.

It trains a small classifier (no dropout, no batch norm: its gradients depend on its own
examples only) on FSDD recordings, as log-mel means, with the Trainer. The batches are a
fixed global list, dealt in turn to the processes (batch ``i`` to rank ``i % N``), so that a
1-process run over the same list with each turn's batches joined is the same training.
SPECS is a JSON object of runs by name (run one after the other in the same processes), each
a JSON object:

- ``batch_sizes``: the global list's batch sizes (utterances taken in order);
- ``join``: with one process, join this many consecutive batches into one (a 2-process run's turn);
- ``accumulate``: ``trainer.accumulate_batches``;
- ``epochs``;
- ``empty``: indices of global batches to empty (every utterance unusable);
- ``poison``: indices of global batches whose loss is NaN;
- ``drop``: indices of global batches left out (a run that skips them on purpose);
- ``on_nonfinite``, ``parallel``: the Trainer's.

Rank 0 writes ``OUT/NAME/weights.safetensors`` and ``OUT/NAME/result.json`` (its global step
and skips) for each run.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import os
import sys
from pathlib import Path

import soundfile
import torch
from safetensors.torch import save_file
from torch import nn

from cadence import ClassificationTask, Trainer
from cadence.data.features import LogMel
from cadence.runtime.distributed import init_from_environment, leave_process_group

FSDD = Path(os.environ.get("CADENCE_FSDD_ROOT") or Path(__file__).resolve().parents[3] / "shared" / "data" / "fsdd")


@dataclasses.dataclass
class Batch:
    inputs: torch.Tensor  # [B, 40] log-mel means
    targets: torch.Tensor  # [B]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device, non_blocking=False):
        return dataclasses.replace(self, inputs=self.inputs.to(device), targets=self.targets.to(device))


def recordings(count: int) -> Batch:
    """The first ``count`` FSDD recordings (sorted by name) as log-mel means with their digits."""
    files = sorted((FSDD / "recordings").glob("*.wav"))[:count]
    features = LogMel(sample_rate=8000, n_mels=40)
    rows = []
    for path in files:
        audio, _ = soundfile.read(path, dtype="float32")
        mel, _ = features(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
        rows.append(mel[0].mean(dim=-1))
    targets = torch.tensor([int(path.name.split("_")[0]) for path in files])
    return Batch(torch.stack(rows), targets, [path.stem for path in files])


def global_batches(spec: dict) -> list[Batch]:
    everything = recordings(sum(spec["batch_sizes"]))
    batches, start = [], 0
    for index, size in enumerate(spec["batch_sizes"]):
        take = slice(start, start + (0 if index in spec.get("empty", ()) else size))
        batches.append(Batch(everything.inputs[take], everything.targets[take], everything.ids[take]))
        start += size
    return batches


def joined(batches: list[Batch]) -> Batch:
    return Batch(torch.cat([b.inputs for b in batches]), torch.cat([b.targets for b in batches]), [i for b in batches for i in b.ids])


class PoisonedTask(ClassificationTask):
    """NaN loss on a batch that holds a poisoned utterance."""

    def __init__(self, poisoned: set[str]):
        torch.manual_seed(0)
        super().__init__(nn.Sequential(nn.Linear(40, 32), nn.Tanh(), nn.Linear(32, 10)))
        self.poisoned = poisoned

    def logits(self, batch):
        return self.model(batch.inputs), batch.targets

    def training_step(self, batch):
        output = super().training_step(batch)
        if self.poisoned.intersection(batch.ids):
            output.loss = output.loss * float("nan")
        return output


def main() -> None:
    faulthandler.enable(all_threads=True)  # a crash in C++ (an abort) still shows where Python was
    specs, out = json.loads(sys.argv[1]), Path(sys.argv[2])
    for name, spec in specs.items():
        train(spec, out / name)
    leave_process_group(finished=True)


def train(spec: dict, out: Path) -> None:
    rank, world = init_from_environment()
    batches = global_batches(spec)
    poisoned = {batches[index].ids[0] for index in spec.get("poison", ())}
    kept = [batch for index, batch in enumerate(batches) if index not in spec.get("drop", ())]
    if world == 1 and spec.get("join", 1) > 1:
        step = spec["join"]
        mine = [joined(kept[start:start + step]) for start in range(0, len(kept), step)]
    else:
        mine = kept[rank::world]
    task = PoisonedTask(poisoned)
    trainer = Trainer(
        task, torch.optim.Adam(task.parameters(), lr=0.01), max_epochs=spec.get("epochs", 2), device="cpu",
        progress_bar=False, log_every=1, accumulate_batches=spec.get("accumulate", 1),
        on_nonfinite=spec.get("on_nonfinite", "error"), parallel=spec.get("parallel", "ddp"),
    )
    trainer.fit(mine)
    weights = trainer.stateful_components()["task"].state_dict()  # whole, also when sharded (a collective)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_file({name: value.contiguous() for name, value in weights.items()}, str(out / "weights.safetensors"))
        result = {"global_step": trainer.state.global_step, "skipped_batches": trainer.state.skipped_batches,
                  "parameter_types": sorted({type(parameter).__name__ for parameter in task.parameters()})}
        (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
