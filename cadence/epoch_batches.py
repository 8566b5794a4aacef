"""Which batches an epoch trains: from the resume point, to the end or to a stop.

Helpers of :meth:`cadence.trainer.Trainer.train_epoch`, kept apart so the loop reads top to
bottom. They take the trainer for its state, its logger and its stop requests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from cadence.trainer import Trainer

__all__ = ["is_last_batch", "length", "remaining_batches", "until_stopped"]

logger = logging.getLogger("cadence")


def length(data: Iterable) -> int | None:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def remaining_batches(trainer: Trainer, train_data: Iterable) -> Iterator:
    """An iterator over the epoch's batches not trained yet.

    A loader with ``load_state_dict`` (cadence's AudioDataLoader) was moved to its cursor when
    the trainer resumed. Any other iterable is replayed from the start of the epoch with the
    random state the epoch began with (a DataLoader draws its shuffling and worker seeds
    from it), and the batches already trained are loaded and dropped: exact, but slower.
    """
    skip = trainer.state.batch_in_epoch
    if skip == 0:
        trainer.epoch_start_rng = torch.get_rng_state()
        return iter(train_data)
    if callable(getattr(train_data, "load_state_dict", None)):
        return iter(train_data)
    logger.warning("resuming inside an epoch of a plain iterable: loading and dropping %d batches", skip)
    resumed_rng = torch.get_rng_state()
    if trainer.epoch_start_rng is not None:
        # A DataLoader draws from the global RNG when its iterator is made and at its first
        # batch (the shuffle); the batches already trained are drawn under the same state.
        torch.set_rng_state(trainer.epoch_start_rng)
    iterator = iter(train_data)
    for _ in range(skip):
        next(iterator, None)
    torch.set_rng_state(resumed_rng)
    return iterator


def until_stopped(trainer: Trainer, batches: Iterable) -> Iterator[Any]:
    """``batches``, ending quietly when loading fails after a stop request: a SIGTERM sent to
    the whole process group (as SLURM's scancel does) also ends the DataLoader's workers.
    The batch that failed was not trained, so the checkpoint saved next is exact."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError as error:
            if not trainer.stop_requested():
                raise
            logger.warning("loading stopped after the stop request (%s); stopping at step %d", error, trainer.state.global_step)
            return
        yield batch


def is_last_batch(trainer: Trainer, train_data: Iterable) -> bool:
    """Whether the batch just trained was the epoch's last (False when that cannot be known)."""
    batches_left = getattr(train_data, "batches_left", None)
    if callable(batches_left):
        return batches_left() == 0
    total = length(train_data)
    return total is not None and trainer.state.batch_in_epoch >= total
