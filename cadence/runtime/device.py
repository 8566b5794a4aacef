"""Choosing a device and moving nested batches onto it."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from cadence.errors import ConfigError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; any other name is checked to exist."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"trainer.device: '{name}' is not a device; use auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: '{name}' asked for, but no CUDA device is available; use auto or cpu")
    return device


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a nested batch (dict, list, tuple, namedtuple, dataclass) to ``device``.

    >>> move_to_device({"x": [torch.zeros(2)]}, torch.device("cpu"))["x"][0].device.type
    'cpu'
    """
    if isinstance(batch, torch.Tensor):
        # non_blocking only overlaps copies from pinned memory; it is harmless otherwise.
        return batch.to(device, non_blocking=True)
    if callable(getattr(batch, "to", None)) and not isinstance(batch, type):
        return batch.to(device)  # a batch type that knows how to move itself (e.g. pinned copies)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {field.name: move_to_device(getattr(batch, field.name), device) for field in dataclasses.fields(batch) if field.init}
        return dataclasses.replace(batch, **changes)
    if isinstance(batch, dict):
        return type(batch)((key, move_to_device(value, device)) for key, value in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch
