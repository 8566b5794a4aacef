"""A running weighted mean of a scalar, kept as a sum and a total weight.

The typical use is the validation loss: each batch's loss is a mean over the
batch, so it is added with ``weight=batch_size`` and the result is the mean
over examples, not the mean of batch means (which would over-weight a short
last batch). Sum and weight add up across processes, so :meth:`Mean.sync` is exact.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cadence.metrics.base import Metric


class Mean(Metric):
    """Weighted mean of the values given to :meth:`update`, reported as ``{name: mean}``.

    Unlike the classification metrics it is fed a value, not predictions and
    targets. With nothing added (or only zero weights) it reports NaN.

    >>> loss = Mean("loss")
    >>> loss.update(2.0, weight=3)   # a batch of 3 with mean loss 2.0
    >>> loss.update(6.0, weight=1)   # a last batch of 1
    >>> loss.compute()
    {'loss': 3.0}
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ValueError(f"Mean: name must be a non-empty string, got {name!r}")
        self.name = name
        self.add_count("sum", torch.zeros((), dtype=torch.float64))
        self.add_count("weight", torch.zeros((), dtype=torch.float64))

    def update(self, value: float | Tensor, weight: float | Tensor = 1) -> None:  # type: ignore[override]
        """Add ``value`` (a number or one-element tensor, e.g. a batch's mean loss)
        counted ``weight`` times (e.g. the batch size)."""
        value = self._as_number("value", value)
        weight = self._as_number("weight", weight)
        if not weight >= 0:
            raise ValueError(f"Mean({self.name!r}): weight must be >= 0, got {weight}")
        # A non-finite value is kept on purpose: a NaN loss should show up as a NaN mean.
        self.counts["sum"] += value * weight
        self.counts["weight"] += weight

    def _as_number(self, what: str, number: float | Tensor) -> float:
        if isinstance(number, Tensor):
            if number.numel() != 1:
                raise ValueError(
                    f"Mean({self.name!r}): {what} must be a scalar, "
                    f"got a tensor of shape {tuple(number.shape)}"
                )
            return float(number.detach())  # host sync when the tensor is on an accelerator
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"Mean({self.name!r}): {what} must be a number, got {type(number).__name__}")
        return float(number)

    def compute(self) -> dict[str, float]:
        weight = float(self.counts["weight"])
        return {self.name: float(self.counts["sum"]) / weight if weight > 0 else math.nan}

    def __repr__(self) -> str:
        return f"Mean({self.name!r})"
