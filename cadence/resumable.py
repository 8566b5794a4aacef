"""The training data's position in the epoch, kept in one place: the train loader.

A loader that knows its whole position (cadence's :class:`~cadence.data.loader.AudioDataLoader`,
or any object with ``state_dict``, ``load_state_dict`` and ``batches_left``; ``set_epoch`` if
it plans epochs) owns its ``(epoch, cursor)`` and is used as it is. Any other iterable is
wrapped in :class:`PositionedIterable`, which counts the batches consumed in the epoch. To
resume inside an epoch it lets the wrapped object resume itself when that has
``load_state_dict`` (a stateful DataLoader); otherwise (a torch ``DataLoader``) it replays the
epoch from its start under the random state the epoch began with. The Trainer keeps no copy
of the position.

>>> loader = resumable_loader([10, 20, 30])
>>> batches = iter(loader)
>>> next(batches), loader.batches_left()
(10, 2)
>>> resumed = resumable_loader([10, 20, 30])
>>> resumed.load_state_dict(loader.state_dict())
>>> list(resumed)
[20, 30]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["PositionedIterable", "ResumableLoader", "batches_left", "length", "resumable_loader"]

logger = logging.getLogger("cadence")


@runtime_checkable
class ResumableLoader(Protocol):
    """Training data that owns its position in the epoch (see the module's docstring)."""

    def __iter__(self) -> Iterator[Any]: ...  # the batches of the epoch not consumed yet

    def batches_left(self) -> int: ...  # 0 right after the epoch's last batch

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def length(data: Iterable) -> int | None:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def resumable_loader(data: Iterable, current: ResumableLoader | None = None) -> ResumableLoader:
    """``data`` itself when it knows its whole position, else ``data`` wrapped in
    :class:`PositionedIterable`; ``current`` (the loader of an earlier ``fit``) when it already
    is, or wraps, ``data``, so that a second ``fit`` continues where the first stopped."""
    if current is not None and (current is data or getattr(current, "data", None) is data):
        return current
    if all(callable(getattr(data, method, None)) for method in ("state_dict", "load_state_dict", "batches_left")):
        return data  # type: ignore[return-value]
    return PositionedIterable(data)


def batches_left(loader: ResumableLoader) -> int | None:
    """Batches of the epoch not consumed yet (0 right after its last one); None when unknown."""
    method = getattr(loader, "batches_left", None)
    return method() if callable(method) else None


class PositionedIterable:
    """Any iterable with a position: ``(epoch, cursor)``, the cursor counting batches consumed.

    Resuming inside an epoch: an object with ``load_state_dict`` gets its own state back and
    resumes itself. Anything else is replayed from the epoch's first batch under the torch
    random state saved as the epoch began (a DataLoader draws its shuffle and worker seeds
    from it when its iterator starts); the batches already trained are dropped and the current
    random state is put back: exact, but the dropped batches are loaded. ``set_epoch`` and
    ``state_dict`` of the wrapped object, when it has them, are passed on.
    """

    def __init__(self, data: Iterable):
        self.data = data
        self.epoch = 0
        self.cursor = 0
        self.epoch_start_rng: torch.Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.cursor = epoch, 0
        if callable(getattr(self.data, "set_epoch", None)):
            self.data.set_epoch(epoch)

    @property
    def resumes_itself(self) -> bool:
        return callable(getattr(self.data, "load_state_dict", None))

    def batches_left(self) -> int | None:
        total = length(self.data)
        return None if total is None else total - self.cursor

    def __len__(self) -> int:
        total = length(self.data)
        if total is None:
            raise TypeError(f"{type(self.data).__name__} has no length")
        return total - self.cursor

    def __iter__(self) -> Iterator[Any]:
        if self.cursor == 0:
            self.epoch_start_rng = torch.get_rng_state()
        iterator = self._replayed() if self.cursor > 0 and not self.resumes_itself else iter(self.data)
        for batch in iterator:
            self.cursor += 1
            yield batch
        self.epoch, self.cursor = self.epoch + 1, 0

    def _replayed(self) -> Iterator[Any]:
        logger.warning("resuming inside an epoch of a plain iterable: loading and dropping %d batches", self.cursor)
        resumed_rng = torch.get_rng_state()
        if self.epoch_start_rng is not None:
            torch.set_rng_state(self.epoch_start_rng)
        iterator = iter(self.data)
        for _ in range(self.cursor):
            next(iterator, None)
        torch.set_rng_state(resumed_rng)
        return iterator

    def state_dict(self) -> dict[str, Any]:
        wrapped = self.data.state_dict() if callable(getattr(self.data, "state_dict", None)) else None
        return {"epoch": self.epoch, "cursor": self.cursor, "epoch_start_rng": self.epoch_start_rng, "data": wrapped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.epoch_start_rng = state.get("epoch_start_rng")
        if self.resumes_itself and state.get("data") is not None:
            self.data.load_state_dict(state["data"])
