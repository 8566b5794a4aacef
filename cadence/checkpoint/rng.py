"""Seeding and capturing every random number generator training touches."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


_last_seed: int | None = None  # what a run built in Python records as its recipe's seed


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (every CUDA device too)."""
    global _last_seed
    _last_seed = seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def last_seed() -> int | None:
    """The seed of the last :func:`seed_everything` call in this process, if any."""
    return _last_seed


def rng_state() -> dict[str, Any]:
    """The state of every generator, in a form cadence's checkpoints store without pickle."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load_rng_state(state: dict[str, Any]) -> None:
    python_state = state["python"]
    # JSON turns tuples into lists; random.setstate needs the original nesting of tuples.
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state["numpy"]
    np.random.set_state(tuple(numpy_state))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
