"""The loader a Trainer iterates: planned batches, resumable by cursor, with a quarantine.

:class:`AudioDataLoader` wraps a ``torch.utils.data.DataLoader`` over an
:class:`~cadence.data.dataset.AudioDataset` and a :class:`~cadence.data.sampler.BatchSampler`.
It adds what a training run needs:

- ``state_dict()`` is ``(epoch, cursor)`` where the cursor counts batches the training loop
  has *consumed* (workers may have loaded more); ``load_state_dict`` makes the next
  iteration start at that batch of that epoch's plan, loading nothing before it. This works
  with ``num_workers > 0`` and persistent workers, since the plan is sliced in the main
  process before indices reach the workers.
- ``set_epoch(epoch)`` (the Trainer calls it) selects the plan; a complete pass advances
  the epoch by itself.
- Bad audio skipped by the dataset goes to a :class:`Quarantine`: one JSON line per
  utterance in ``quarantine.jsonl`` with its reason, and a budget: when more than
  ``max_skip_rate`` of an epoch's planned utterances were skipped, training stops with a
  :class:`~cadence.errors.DataError` that says where to look.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cadence.data.dataset import AudioDataset, Batch, Skipped
from cadence.data.sampler import BatchSampler
from cadence.errors import DataError
from cadence.runtime.distributed import all_gather_objects, world_size
from cadence.runtime.files import open_for_append, strict_json, writing

__all__ = ["AudioDataLoader", "Quarantine"]

logger = logging.getLogger("cadence")


def ignore_interrupt(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Quarantine:
    """Records skipped utterances (in ``path``, a JSON Lines file, when given) and enforces the budget."""

    def __init__(self, path: str | Path | None, max_skip_rate: float = 0.01) -> None:
        if not 0.0 <= max_skip_rate <= 1.0:
            raise ValueError(f"max_skip_rate must be in [0, 1], got {max_skip_rate}")
        self.path = None if path is None else Path(path)
        self.max_skip_rate = max_skip_rate
        self.skipped_in_epoch = 0
        self.planned_in_epoch = 0
        self.recorded_ids = self._read_recorded_ids()
        self.unwritten: list[dict] = []  # recorded without a file (ranks other than 0), until gathered

    def _read_recorded_ids(self) -> set[str]:
        # A resumed run appends to the same file without repeating what is already there.
        if self.path is None or not self.path.is_file():
            return set()
        ids = set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: rewritten when met again
        return ids

    def start_epoch(self, planned_utterances: int) -> None:
        self.skipped_in_epoch, self.planned_in_epoch = 0, planned_utterances

    def record(self, skipped: Sequence[Skipped], epoch: int) -> None:
        for item in skipped:
            self.skipped_in_epoch += 1
            if item.id in self.recorded_ids:
                continue
            self.recorded_ids.add(item.id)
            logger.warning("skipped utterance %r: %s", item.id, item.message)
            entry = {"id": item.id, "audio": item.audio, "reason": item.reason, "message": item.message, "epoch": epoch}
            if self.path is not None:
                self._append(entry)
            else:
                self.unwritten.append(entry)
        budget = self.max_skip_rate * self.planned_in_epoch
        if self.skipped_in_epoch > budget:
            where = f"; each one is listed with its reason in {self.path}" if self.path else ""
            raise DataError(
                f"{self.skipped_in_epoch} of {self.planned_in_epoch} utterances planned this epoch had unusable audio, "
                f"more than the allowed {self.max_skip_rate:.2%}{where}. Run `cadence data check MANIFEST` to list "
                "every bad file, fix or remove them, or raise data.max_skip_rate"
            )

    def gather(self) -> None:
        """With several processes (a collective, at each epoch's end): the entries the others
        recorded go into this process's file (rank 0's; the others have none)."""
        gathered = all_gather_objects(self.unwritten)
        self.unwritten = []
        if self.path is None:
            return
        for entry in (entry for part in gathered for entry in part):
            if entry["id"] not in self.recorded_ids:
                self.recorded_ids.add(entry["id"])
                self._append(entry)

    def _append(self, record: dict) -> None:
        with writing(self.path):  # disk full: a StorageError naming the file
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open_for_append(self.path) as handle:
                handle.write(strict_json(record, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())


class _PlanFromCursor:
    """The DataLoader's batch sampler: the loader's plan, from the loader's cursor.

    It reads the position when an iteration starts and keeps none of its own: the
    AudioDataLoader alone owns ``(epoch, cursor)``. It runs in the main process, so slicing
    here means workers never load a skipped batch.
    """

    def __init__(self, loader: AudioDataLoader):
        # A weak reference: a strong one closes a cycle (loader -> DataLoader -> this -> loader),
        # which only the garbage collector frees. It clears the DataLoader's queues before their
        # iterator's shutdown can use them, and each worker is then waited for, then killed, 5 s
        # apiece, at whatever moment the collector runs. Without the cycle, the last reference
        # going stops the workers at once.
        self._loader = weakref.ref(loader)

    @property
    def loader(self) -> AudioDataLoader:
        return self._loader()

    def __iter__(self) -> Iterator[list[tuple[int, float, float]]]:
        plan = self.loader.batch_sampler.plan(self.loader.epoch)
        for index in range(self.loader.cursor, len(plan)):
            yield plan.batch(index)

    def __len__(self) -> int:
        return self.loader.batches_left()


class AudioDataLoader:
    """Iterates :class:`~cadence.data.dataset.Batch` objects following a :class:`BatchSampler`'s plans."""

    def __init__(
        self,
        dataset: AudioDataset,
        batch_sampler: BatchSampler,
        *,
        num_workers: int = 0,
        persistent_workers: bool = True,
        pin_memory: bool | None = None,
        quarantine: Quarantine | None = None,
        resumable: bool = True,
        name: str = "train",
    ) -> None:
        if quarantine is not None and not dataset.skip_bad_audio:
            raise ValueError("a quarantine needs a dataset made with skip_bad_audio=True")
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.quarantine = quarantine
        self.resumable = resumable
        self.name = name
        self.epoch = 0
        self.cursor = 0
        self._described = False
        self.loader = DataLoader(
            dataset,
            batch_sampler=_PlanFromCursor(self),
            collate_fn=dataset.collate,
            num_workers=num_workers,
            persistent_workers=persistent_workers and num_workers > 0 and resumable,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
            # Its own generator: creating an iterator (each epoch, and on resume) would otherwise
            # draw from the global torch RNG and shift every random number after it.
            generator=torch.Generator().manual_seed(batch_sampler.seed),
            # Ctrl-C reaches the whole process group; workers leave it to the main process,
            # which saves a checkpoint and stops cleanly. (SIGTERM is left alone: it is how
            # torch and multiprocessing shut workers down.)
            worker_init_fn=ignore_interrupt,
        )

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.cursor = epoch, 0

    def set_batching(self, **changes) -> None:
        """Change batching options (a curriculum: ``max_duration``), for the epochs planned from
        now on: call it before the epoch starts."""
        self.batch_sampler.set_options(**changes)

    def __len__(self) -> int:
        """Batches left in this epoch (all of them, unless resumed mid-epoch)."""
        return self.batches_left()

    def batches_left(self) -> int:
        """Batches of this epoch's plan not consumed yet (0 right after its last one)."""
        return len(self.batch_sampler.plan(self.epoch)) - self.cursor

    def _describe(self, plan) -> None:
        options = self.batch_sampler.options
        dropped = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in plan.dropped.items())
        logger.info(
            "%s data: %d utterances; epoch plan: %d segments in %d batches (ordering %s, max_frames %s, max_seqs %d), "
            "%.1f%% padding%s",
            self.name, len(self.dataset), plan.num_segments, len(plan), options.ordering, options.max_frames,
            options.max_seqs, 100 * plan.padding_fraction(options.frames_per_second),
            f"; left out: {dropped}" if dropped else "",
        )
        left_out = sum(plan.dropped.values())
        if left_out > len(self.dataset) / 2:
            # Most likely a chunk_size or a length limit meant for other audio: the run would
            # train on a sliver of its data and only an info line would say so.
            logger.warning(
                "%s data: %d segments of %d utterances are left out of every epoch (%s); check chunk_size, "
                "min_duration and max_duration in the recipe's batching for this split against the audio's durations",
                self.name, left_out, len(self.dataset), dropped,
            )

    def __iter__(self) -> Iterator[Batch]:
        if not self.resumable:
            self.cursor = 0  # an evaluation pass is always whole, even after one was cut short
        plan = self.batch_sampler.plan(self.epoch)
        if not self._described:
            self._describe(plan)
            self._described = True
        if plan.global_batches == 0:
            raise DataError(
                f"{self.name} data: the batch plan is empty ({len(self.dataset)} utterances, left out: {plan.dropped}); "
                "check min_duration / max_duration / chunk_size against the manifest's durations"
            )
        if self.quarantine is not None and self.cursor == 0:
            self.quarantine.start_epoch(plan.num_segments)
        for batch in self.loader:
            self.cursor += 1
            if batch.skipped and self.quarantine is not None:
                self.quarantine.record(batch.skipped, self.epoch)
            if len(batch) == 0 and world_size() == 1:
                continue  # every utterance of this batch was unusable (with several processes, see placeholder_step)
            yield batch
        if self.resumable:
            self.epoch, self.cursor = self.epoch + 1, 0
            if self.quarantine is not None:
                self.quarantine.skipped_in_epoch = 0  # counted again in the next epoch
                if world_size() > 1:
                    self.quarantine.gather()  # every process ends the epoch here (equal shares)

    def close(self) -> None:
        """Stop the worker processes now; the next iteration starts new ones where the cursor is.

        The Trainer calls it when ``fit`` ends. Persistent workers would otherwise live until
        garbage collection reached the iterator an interrupted epoch left behind, and there,
        at whatever moment that came (in the middle of a later run's checkpoint save), the
        DataLoader's shutdown could wait seconds per worker for processes that had loaded
        ahead. ``_iterator`` is the DataLoader's persistent iterator: no public API stops it.
        """
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None

    def statistics_pass(self) -> DataLoader:
        """Every training utterance once, whole, in length order (for global feature statistics).

        A separate loader: iterating it leaves this loader's epoch and cursor alone.
        Unusable files are left out (the training epochs will quarantine them).
        """
        sampler = BatchSampler(self.dataset.durations, self.batch_sampler.options.for_evaluation(), rank=0, world_size=1)
        return DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.dataset.collate)

    def state_dict(self) -> dict[str, int]:
        """``epoch`` and ``cursor`` (batches consumed), the plan's length (to refuse a different
        plan on resume) and the bad-audio count of the epoch so far."""
        skipped = self.quarantine.skipped_in_epoch if self.quarantine is not None else 0
        plan = self.batch_sampler.plan(self.epoch)
        return {"epoch": self.epoch, "cursor": self.cursor, "batches": len(plan), "skipped_in_epoch": skipped,
                "world_size": self.batch_sampler.world_size, "global_batches": plan.global_batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at the saved position. Saved by another number of processes, the position in
        the global batch plan carries over (every process has taken the same number of batches):
        exact at an epoch's end, and wherever the batches taken are a multiple of this world size."""
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        plan = self.batch_sampler.plan(epoch)
        batches, world = len(plan), self.batch_sampler.world_size
        saved_world = int(state.get("world_size", world))
        if saved_world != world:
            taken = cursor * saved_world  # global batches taken in this epoch (ranks took them in turn)
            if taken % world:
                raise DataError(
                    f"{self.name} data: the checkpoint was taken after {taken} batches of epoch {epoch + 1} on {saved_world} "
                    f"processes, which {world} processes cannot share equally; resume on {saved_world} processes, or from a "
                    "checkpoint at the end of an epoch"
                )
            cursor = min(taken // world, batches)
            expected, saved_batches = plan.global_batches, state.get("global_batches", plan.global_batches)
        else:
            expected, saved_batches = batches, state.get("batches", batches)
        # At an epoch's start (cursor 0) any plan fits: the batch count saved then was counted with
        # the options of the epoch that had just ended, and a curriculum (schedules: data.*) sets
        # the new epoch's options only when it starts.
        if not 0 <= cursor <= batches or (saved_batches != expected and cursor > 0):
            raise DataError(
                f"{self.name} data: the saved position (epoch {epoch}, batch {cursor} of {saved_batches}) does not "
                f"fit this run's plan of {expected} batches; the data, batching options, seed or number of processes "
                "changed since the checkpoint. Resume with the same ones, or start a new run"
            )
        self.epoch, self.cursor = epoch, cursor
        if self.quarantine is not None:
            self.quarantine.start_epoch(self.batch_sampler.plan(self.epoch).num_segments)
            self.quarantine.skipped_in_epoch = int(state.get("skipped_in_epoch", 0))
