"""Batch plans: which utterances (or segments of them) go into which batch, epoch by epoch.

An epoch's whole plan is a pure function of (durations, options, seed, epoch, rank,
world size), built up front by :func:`build_plan`. Hence:

- every rank of a distributed job derives the same global plan and takes an equal share
  (the batch list is wrapped round to a multiple of the world size), so every rank runs
  the same number of batches and no collective waits for a rank that ran out;
- resuming is a cursor: batch ``cursor`` of the plan is the next one, and no skipped data
  is ever loaded.

Steps of a plan:

1. Segments: whole utterances, or chunks. ``chunk_size`` alone takes one random chunk of
   that many seconds from each utterance (utterances shorter than a chunk are dropped);
   ``chunk_size`` with ``chunk_step`` cuts every utterance into chunks of ``chunk_size``
   every ``chunk_step`` seconds until a chunk reaches its end; that last one may be
   shorter (RETURNN's ``size:step``).
2. Length filters: segments shorter than ``min_duration`` or longer than ``max_duration``
   are left out and counted (RETURNN's ``max_seq_length``).
3. Ordering (``ordering``):
   ``random``: a random permutation, batches in that order;
   ``sorted`` / ``sorted_reverse``: by increasing / decreasing length;
   ``buckets``: segments fall into ``num_buckets`` length buckets of equal population;
   each bucket is shuffled, the buckets are packed in increasing length (a batch may
   straddle two neighbouring buckets, so no bucket leaves a half-empty batch), then all
   batches are shuffled: batch order is random, each batch holds similar lengths, and
   batch membership changes from epoch to epoch within a bucket;
   ``laplace:N``: RETURNN's order: a random permutation cut into N bins, each bin sorted by
   length, alternately increasing and decreasing, so neighbours have similar lengths;
   ``sortagrad``: ``sorted`` in the first epoch (epoch 0), ``buckets`` afterwards.
4. Packing: consecutive segments join a batch while ``batch size x longest`` stays within
   ``max_frames`` (padded frames, at ``frames_per_second``) and the count within
   ``max_seqs``. A segment longer than the budget alone forms a batch of one.

Example:

    >>> durations = np.array([1.0, 1.1, 3.0, 2.9, 1.05, 3.1])
    >>> plan = build_plan(durations, BatchingOptions(max_frames=700, ordering="sorted"), seed=0, epoch=0)
    >>> [sorted(batch.tolist()) for batch in plan.batch_indices()]
    [[0, 1, 4], [2, 3], [5]]
    >>> round(plan.padding_fraction(frames_per_second=100), 3)
    0.02
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator

import numpy as np
import pydantic
import torch
from torch.utils.data import Sampler

from cadence.bounds import NonNegativeFloat, PositiveFloat, PositiveInt
from cadence.runtime.distributed import distributed_rank_and_size

__all__ = ["BatchPlan", "BatchSampler", "BatchingOptions", "build_plan", "frame_counts"]

logger = logging.getLogger("cadence")

_ORDERINGS = ("random", "sorted", "sorted_reverse", "buckets", "sortagrad")
# Independent random streams per (seed, epoch), so changing one step never shifts another.
_CHUNK_STREAM, _ORDER_STREAM, _BATCH_ORDER_STREAM = 0, 1, 2


@pydantic.dataclasses.dataclass(frozen=True, config=pydantic.ConfigDict(extra="forbid", allow_inf_nan=False))
class BatchingOptions:
    """How an epoch's batches are planned (a recipe's ``batching:`` section)."""

    max_frames: PositiveInt | None = 20000  # None: no budget, only max_seqs
    max_seqs: PositiveInt = 64
    frames_per_second: PositiveFloat = 100.0  # frames counted at this rate (10 ms hop)
    ordering: str = "buckets"
    num_buckets: PositiveInt = 128
    min_duration: NonNegativeFloat = 0.0
    max_duration: PositiveFloat | None = None
    chunk_size: PositiveFloat | None = None
    chunk_step: PositiveFloat | None = None

    @pydantic.field_validator("ordering")
    @classmethod
    def _known_ordering(cls, value: str) -> str:
        if value in _ORDERINGS:
            return value
        name, _, bins = value.partition(":")
        if name == "laplace" and bins.isdigit() and int(bins) > 0:
            return value
        raise ValueError(f"unknown ordering {value!r}; use one of {', '.join(_ORDERINGS)} or laplace:N (N bins, e.g. laplace:8)")

    def for_evaluation(self) -> BatchingOptions:
        """Every utterance whole, in length order, within the same budget: no chunks, no filters."""
        return BatchingOptions(
            max_frames=self.max_frames, max_seqs=self.max_seqs, frames_per_second=self.frames_per_second, ordering="sorted"
        )

    @pydantic.model_validator(mode="after")
    def _step_needs_size(self) -> BatchingOptions:
        if self.chunk_step is not None and self.chunk_size is None:
            raise ValueError("chunk_step needs chunk_size (size:step chunking)")
        return self


@dataclasses.dataclass
class BatchPlan:
    """One epoch's batches for one rank, as flat arrays (cheap to keep, slice and ship).

    Batch ``b`` holds segments ``bounds[b]:bounds[b+1]`` of ``indices`` (utterance
    indices), ``starts`` (seconds into the utterance; NaN: the whole utterance) and
    ``durations`` (seconds). ``dropped`` counts segments left out, by reason;
    ``global_batches`` is the number of batches of all ranks together.
    """

    indices: np.ndarray
    starts: np.ndarray
    durations: np.ndarray
    bounds: np.ndarray
    dropped: dict[str, int]
    global_batches: int

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def batch(self, position: int) -> list[tuple[int, float, float]]:
        """The keys of batch ``position``, for :meth:`cadence.data.dataset.AudioDataset.__getitem__`."""
        begin, end = self.bounds[position], self.bounds[position + 1]
        return list(zip(self.indices[begin:end].tolist(), self.starts[begin:end].tolist(), self.durations[begin:end].tolist()))

    def batch_indices(self) -> list[np.ndarray]:
        return [self.indices[self.bounds[b] : self.bounds[b + 1]] for b in range(len(self))]

    @property
    def num_segments(self) -> int:
        return int(self.bounds[-1])

    def padding_fraction(self, frames_per_second: float) -> float:
        """Padded frames / all frames of the padded batches."""
        frames = frame_counts(self.durations, frames_per_second)
        total = padded = 0.0
        for b in range(len(self)):
            batch_frames = frames[self.bounds[b] : self.bounds[b + 1]]
            total += batch_frames.max() * len(batch_frames)
            padded += batch_frames.max() * len(batch_frames) - batch_frames.sum()
        return float(padded / total) if total else 0.0


def frame_counts(durations: np.ndarray, frames_per_second: float) -> np.ndarray:
    """Frames per segment, rounded up; the tiny slack keeps 1.1 s at 100 fps at 110, not 111."""
    return np.ceil(np.asarray(durations) * frames_per_second - 1e-6).astype(np.int64)


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, stream])


def _segments(durations: np.ndarray, options: BatchingOptions, rng: np.random.Generator, dropped: dict[str, int]):
    """(utterance indices, starts, durations) of the epoch's segments, before filtering."""
    indices = np.arange(len(durations), dtype=np.int64)
    if options.chunk_size is None:
        return indices, np.full(len(durations), np.nan), durations.astype(np.float64)
    size = options.chunk_size
    if options.chunk_step is None:  # one random chunk per utterance long enough
        long_enough = durations >= size
        dropped["shorter_than_chunk"] = int((~long_enough).sum())
        kept = indices[long_enough]
        starts = rng.random(len(kept)) * (durations[long_enough] - size)
        return kept, starts, np.full(len(kept), size)
    step = options.chunk_step
    # The slack keeps float error from adding a chunk: (1.3 - 1.0) / 0.1 is 3.0000000000000004.
    counts = np.ceil(np.maximum(durations - size, 0.0) / step - 1e-9).astype(np.int64) + 1
    counts = np.where(durations > 0, counts, 0)
    dropped["zero_duration"] = int((durations <= 0).sum())
    owner = np.repeat(indices, counts)
    position = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    starts = position * step
    # Chunks starting at or beyond the end (when step > size leaves nothing) are removed.
    keep = starts < durations[owner]
    owner, starts = owner[keep], starts[keep]
    return owner, starts, np.minimum(size, durations[owner] - starts)


def ordering_of(ordering: str, epoch: int) -> str:
    """The ordering used in ``epoch`` (sortagrad: sorted first, then buckets)."""
    if ordering == "sortagrad":
        return "sorted" if epoch == 0 else "buckets"
    return ordering


def _order(lengths: np.ndarray, ordering: str, epoch: int, options: BatchingOptions, rng: np.random.Generator) -> np.ndarray:
    """Segment positions in the order they are packed into batches (``lengths`` in seconds)."""
    ordering = ordering_of(ordering, epoch)
    if ordering == "random":
        return rng.permutation(len(lengths))
    if ordering == "sorted":
        return np.argsort(lengths, kind="stable")
    if ordering == "sorted_reverse":
        return np.argsort(-lengths, kind="stable")
    if ordering == "buckets":
        sorted_positions = np.argsort(lengths, kind="stable")
        buckets = np.array_split(sorted_positions, min(options.num_buckets, max(len(lengths), 1)))
        # Shuffled within each bucket, buckets in increasing length: packing runs across
        # bucket edges, so no bucket leaves a half-empty batch behind.
        return np.concatenate([rng.permutation(bucket) for bucket in buckets])
    bins = np.array_split(rng.permutation(len(lengths)), int(ordering.partition(":")[2]))
    ordered = []
    for number, positions in enumerate(bins):
        by_length = positions[np.argsort(lengths[positions], kind="stable")]
        ordered.append(by_length if number % 2 == 0 else by_length[::-1])
    return np.concatenate(ordered)


def _pack(run: np.ndarray, frames: np.ndarray, max_frames: int | None, max_seqs: int) -> list[np.ndarray]:
    """Greedy packing of ``run`` (segment positions) under the padded-frame budget."""
    batches, current, longest = [], [], 0
    budget = math.inf if max_frames is None else max_frames
    for position, length in zip(run.tolist(), frames[run].tolist()):
        new_longest = max(longest, length)
        if current and (len(current) + 1 > max_seqs or (len(current) + 1) * new_longest > budget):
            batches.append(np.array(current, dtype=np.int64))
            current, new_longest = [], length
        current.append(position)
        longest = new_longest
    if current:
        batches.append(np.array(current, dtype=np.int64))
    return batches


def build_plan(
    durations: np.ndarray,
    options: BatchingOptions,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    equal_shares: bool = True,
) -> BatchPlan:
    """Rank ``rank``'s share of epoch ``epoch``'s batches (see the module docstring).

    ``equal_shares=False`` (evaluation) deals the batches round-robin without wrapping, so
    no batch is seen twice and metrics summed over ranks count every utterance once; ranks
    may then differ by one batch, which evaluation (no gradient all-reduce) allows.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    dropped: dict[str, int] = {}
    owners, starts, lengths = _segments(np.asarray(durations, dtype=np.float64), options, _rng(seed, epoch, _CHUNK_STREAM), dropped)
    too_short = lengths < options.min_duration
    too_long = lengths > options.max_duration if options.max_duration is not None else np.zeros(len(lengths), dtype=bool)
    dropped["shorter_than_min_duration"] = int(too_short.sum())
    dropped["longer_than_max_duration"] = int(too_long.sum())
    keep = ~(too_short | too_long)
    owners, starts, lengths = owners[keep], starts[keep], lengths[keep]
    frames = frame_counts(lengths, options.frames_per_second)

    order = _order(lengths, options.ordering, epoch, options, _rng(seed, epoch, _ORDER_STREAM))
    batches = _pack(order, frames, options.max_frames, options.max_seqs)
    if ordering_of(options.ordering, epoch) == "buckets":  # shuffle the batches so the order is not by length
        batches = [batches[b] for b in _rng(seed, epoch, _BATCH_ORDER_STREAM).permutation(len(batches))]
    global_batches = len(batches)
    if world_size > 1 and batches:
        # Training wraps round (cyclically, as often as needed) to a multiple of the world
        # size: equal shares, nothing dropped, even with more ranks than batches.
        total = global_batches + (-global_batches % world_size if equal_shares else 0)
        batches = [batches[position % global_batches] for position in range(total)][rank::world_size]

    positions = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    bounds = np.zeros(len(batches) + 1, dtype=np.int64)
    np.cumsum([len(batch) for batch in batches], out=bounds[1:])
    dropped = {reason: count for reason, count in dropped.items() if count}
    return BatchPlan(owners[positions], starts[positions], lengths[positions], bounds, dropped, global_batches)


class BatchSampler(Sampler[list]):
    """Yields the batches of an epoch's plan, from a cursor; state is ``(epoch, cursor)``.

    Use it as a DataLoader's ``batch_sampler``. Rank and world size default to those of
    an initialised ``torch.distributed`` process group; ``equal_shares`` as in :func:`build_plan`. Without a wrapper, ``epoch``
    advances by itself after each complete pass; :meth:`set_epoch` sets it explicitly.

    The cursor counts batches *yielded*. A DataLoader with workers draws batches ahead of
    the training loop, so a checkpoint should store what the loop consumed: that is what
    :class:`cadence.data.loader.AudioDataLoader` does.
    """

    def __init__(
        self,
        durations: np.ndarray,
        options: BatchingOptions = BatchingOptions(),
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        equal_shares: bool = True,
    ) -> None:
        default_rank, default_size = distributed_rank_and_size()
        self.equal_shares = equal_shares
        self.durations = np.asarray(durations, dtype=np.float64)
        self.options = options
        self.seed = seed
        self.rank = default_rank if rank is None else rank
        self.world_size = default_size if world_size is None else world_size
        self.epoch = 0
        self.cursor = 0
        self._cached: tuple[int, BatchPlan] | None = None

    def plan(self, epoch: int | None = None) -> BatchPlan:
        epoch = self.epoch if epoch is None else epoch
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, build_plan(self.durations, self.options, self.seed, epoch, self.rank, self.world_size, self.equal_shares))
        return self._cached[1]

    def set_options(self, **changes) -> None:
        """Replace some :class:`BatchingOptions` (validated as a recipe's are); the next plan
        follows them. Plans depend on (options, seed, epoch) only, so a resumed run that sets the
        same options before the epoch gets the same plan."""
        options = dataclasses.replace(self.options, **changes)
        if options != self.options:
            self.options, self._cached = options, None

    def set_epoch(self, epoch: int) -> None:
        """Plan epoch ``epoch`` next; the cursor restarts unless it is the current epoch."""
        if epoch != self.epoch:
            self.epoch, self.cursor = epoch, 0

    def __len__(self) -> int:
        return len(self.plan())

    def __iter__(self) -> Iterator[list[tuple[int, float, float]]]:
        plan = self.plan()
        while self.cursor < len(plan):
            self.cursor += 1
            yield plan.batch(self.cursor - 1)
        self.epoch, self.cursor = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
