"""What a checkpoint of a Trainer holds, and putting it back.

Every component that must survive a restart follows ``state_dict()`` /
``load_state_dict()``; :func:`capture` gathers them into one dict of plain state (tensors,
numbers, strings) for :mod:`cadence.checkpoint`, and :func:`restore` hands each its part.

Held: the task's weights (and feature buffers such as global normalization statistics),
the optimizer (step counts included), the LR schedule, :class:`~cadence.state.TrainState`
(epoch, step, position in the epoch, best value, history), the running epoch's loss sums,
the training data's position (``(epoch, cursor)`` of an AudioDataLoader), training metrics
in flight, each callback's state, every random generator (and the torch one as the epoch
began), the resolved config, and a text task's tokenizer (as JSON).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cadence.errors import CheckpointError
from cadence.checkpoint.rng import load_rng_state, rng_state

if TYPE_CHECKING:
    from cadence.trainer import Trainer

__all__ = ["capture", "restore"]


def _has(component: Any, method: str) -> bool:
    return callable(getattr(component, method, None))


def callback_key(index: int, callback: Any) -> str:
    return f"{index}:{type(callback).__name__}"


def capture(trainer: Trainer) -> dict[str, Any]:
    """The trainer's whole state at this moment."""
    return {
        "task": trainer.task.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "trainer_state": trainer.state.state_dict(),
        "epoch_sums": {name: value.detach().cpu() for name, value in trainer.epoch_sums.items()},
        "train_data": trainer.train_data.state_dict() if _has(trainer.train_data, "state_dict") else None,
        "train_metrics": [metric.state_dict() for metric in trainer.train_metrics],
        "callbacks": {callback_key(index, callback): callback.state_dict() for index, callback in enumerate(trainer.callbacks)},
        "rng": rng_state(),
        # The torch RNG as the epoch began: a plain DataLoader resumed mid-epoch replays its shuffle.
        "epoch_start_rng": trainer.epoch_start_rng,
        "config": trainer.config,
        # A text task's tokenizer travels with its weights: ids mean nothing without it.
        "tokenizer": tokenizer_document(trainer.task),
    }


def tokenizer_document(task: Any) -> dict[str, Any] | None:
    tokenizer = getattr(task, "tokenizer", None)
    return tokenizer.to_dict() if tokenizer is not None else None


def restore(trainer: Trainer, state: dict[str, Any]) -> None:
    """Load ``state`` (from :func:`capture`) into the trainer's components; the random
    generators last, so that nothing restored after them draws a number."""
    trainer.task.load_state_dict(state["task"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None and state.get("scheduler") is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.state.load_state_dict(state["trainer_state"])
    for name, value in state.get("epoch_sums", {}).items():
        trainer.epoch_sums[name] = value.to(trainer.device)
    if state.get("train_data") is not None and _has(trainer.train_data, "load_state_dict"):
        trainer.train_data.load_state_dict(state["train_data"])
    for metric, metric_state in zip(trainer.train_metrics, state.get("train_metrics", [])):
        metric.load_state_dict(metric_state)
    saved = state.get("callbacks", {})
    for index, callback in enumerate(trainer.callbacks):
        key = callback_key(index, callback)
        if key not in saved:
            raise CheckpointError(
                f"the checkpoint has no state for callback {key}; its callbacks were {sorted(saved)}. "
                "Resume with the callbacks the run was started with"
            )
        callback.load_state_dict(saved[key])
    trainer.epoch_start_rng = state.get("epoch_start_rng")
    load_rng_state(state["rng"])
