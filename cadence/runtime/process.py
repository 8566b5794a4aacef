"""Settings of the whole process, which a run applies before it builds anything.

A recipe's ``trainer`` section accepts them beside the Trainer's own arguments: its schema is
the Trainer's signature plus the signature of :func:`apply_process_settings` (see
:func:`cadence.run_record.trainer_section_schema`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from cadence.bounds import PositiveInt

__all__ = ["PROCESS_SETTINGS", "apply_process_settings", "process_settings"]


def apply_process_settings(deterministic: bool = False, num_threads: PositiveInt | None = None) -> None:
    """Deterministic kernels only (``deterministic``) and the size of torch's CPU thread pool
    (``num_threads``; None leaves torch's default).

    These are not Trainer arguments: they act on every tensor operation of the process, so
    they must be set before the data, the model and its weights are made, and they outlive
    any one Trainer.
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)


# Their names: the keys of a recipe's trainer section that are not Trainer arguments.
PROCESS_SETTINGS = tuple(inspect.signature(apply_process_settings).parameters)


def process_settings() -> dict[str, Any]:
    """The current process's values of :func:`apply_process_settings`' parameters, as a run
    built in Python records them (its thread count is left to the machine it resumes on)."""
    return {"deterministic": torch.are_deterministic_algorithms_enabled(), "num_threads": None}
