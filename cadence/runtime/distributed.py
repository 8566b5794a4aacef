"""What cadence needs to know of ``torch.distributed``: this process's rank and the world size."""

from __future__ import annotations

import torch

__all__ = ["distributed_rank_and_size"]


def distributed_rank_and_size() -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
