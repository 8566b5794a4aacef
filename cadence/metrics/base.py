"""The :class:`Metric` contract: counts in, numbers out.

A metric keeps only *counts or sums* (CPU tensors of int64 or float64) and turns
them into numbers in :meth:`Metric.compute`. It never keeps an average of
ratios, because averages do not add up across processes while counts do: the
state of a metric fed the whole data set equals the element-wise sum of the
states of metrics fed any split of it. That single property is what makes
:meth:`Metric.sync` (an ``all_reduce(SUM)`` of every count tensor) correct, and
what makes a metric's state safe to save in a checkpoint mid-evaluation.

A subclass declares its count tensors once with :meth:`Metric.add_count`; the
base class then gives it ``reset``, ``state_dict``, ``load_state_dict`` and
``sync`` for free. It writes ``update`` and ``compute``.

Example, a metric that counts how many predictions are exactly zero:

>>> import torch
>>> class ZeroRate(Metric):
...     name = "zero_rate"
...     def __init__(self) -> None:
...         super().__init__()
...         self.add_count("zeros", torch.zeros((), dtype=torch.int64))
...         self.add_count("total", torch.zeros((), dtype=torch.int64))
...     def update(self, predictions, targets):
...         self.counts["zeros"] += int((predictions == 0).sum())
...         self.counts["total"] += predictions.numel()
...     def compute(self):
...         total = int(self.counts["total"])
...         zeros = int(self.counts["zeros"])
...         return {self.name: zeros / total if total else float("nan")}
>>> metric = ZeroRate()
>>> metric.update(torch.tensor([0, 1, 0, 2]), torch.tensor([0, 0, 0, 0]))
>>> metric.compute()
{'zero_rate': 0.5}
>>> metric.state_dict()
{'zeros': tensor(2), 'total': tensor(4)}
"""

from __future__ import annotations

import torch
from torch import Tensor

from cadence.runtime.distributed import reduce_sum, world_size


class Metric:
    """Base class of every metric: named count tensors plus the shared plumbing.

    Lifecycle during an evaluation (what the trainer does)::

        metric.reset()
        for batch in loader:
            metric.update(predictions, targets)   # any number of times, on any device
        metric.sync()                             # once, on every rank (no-op when not distributed)
        results = metric.compute()                # flat {"name": float}

    ``compute`` never fails because nothing was updated: each concrete metric
    documents what it returns then (cadence's metrics return NaN values under
    their usual keys, so the set of keys does not depend on the data).

    This is deliberately a small plain class, not an ``nn.Module``: counts must
    stay on the CPU in exact integer or float64 dtypes, whatever device the
    model is moved to, and they must not show up among the model's parameters
    or buffers.
    """

    #: Default prefix of the keys that :meth:`compute` returns.
    name: str = "metric"

    def __init__(self) -> None:
        # Insertion-ordered, so state_dict keys and sync order are the same on every rank.
        self.counts: dict[str, Tensor] = {}
        self._initial_counts: dict[str, Tensor] = {}

    def add_count(self, key: str, initial: Tensor) -> None:
        """Declare a count tensor; ``initial`` gives its shape and dtype and is
        what :meth:`reset` returns it to (zeros, in every cadence metric)."""
        if key in self.counts:
            raise ValueError(f"{type(self).__name__}: count {key!r} is declared twice")
        if initial.dtype not in (torch.int64, torch.float64):
            # Smaller dtypes overflow or round once summed over a large test set and many ranks.
            raise ValueError(
                f"{type(self).__name__}: count {key!r} must be int64 or float64, got {initial.dtype}"
            )
        self.counts[key] = initial.detach().to("cpu").clone()
        self._initial_counts[key] = self.counts[key].clone()

    def update(self, predictions: Tensor, targets: Tensor) -> None:
        """Add one batch to the counts."""
        raise NotImplementedError(f"{type(self).__name__} does not implement update()")

    def compute(self) -> dict[str, float]:
        """Turn the counts into a flat ``{key: float}`` dict; does not change the counts."""
        raise NotImplementedError(f"{type(self).__name__} does not implement compute()")

    def reset(self) -> None:
        """Return every count to its initial value (before a new evaluation)."""
        for key, count in self.counts.items():
            count.copy_(self._initial_counts[key])

    def state_dict(self) -> dict[str, Tensor]:
        """The counts, as copies (the caller may keep or modify them freely)."""
        return {key: count.clone() for key, count in self.counts.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Replace the counts with those of ``state`` (from :meth:`state_dict`).

        Keys and shapes must match exactly; a mismatch (for example a checkpoint
        written with another ``num_classes``) raises ``ValueError`` and leaves the
        counts untouched.
        """
        metric = type(self).__name__
        missing = sorted(set(self.counts) - set(state))
        unexpected = sorted(set(state) - set(self.counts))
        if missing or unexpected:
            raise ValueError(
                f"{metric}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        for key, count in self.counts.items():
            value = torch.as_tensor(state[key])
            if value.shape != count.shape:
                raise ValueError(
                    f"{metric}.load_state_dict: {key!r} has shape {tuple(value.shape)}, "
                    f"expected {tuple(count.shape)}"
                )
        for key, count in self.counts.items():
            count.copy_(torch.as_tensor(state[key]))  # copy_ converts device and dtype

    def sync(self) -> None:
        """Sum every count over all ranks, in place, so each rank holds the global counts.

        A no-op without several processes (``torch.distributed``). Every rank must call
        it (it is a collective), and only once per evaluation: a second call
        would add the already-global counts together again.
        """
        if world_size() == 1:
            return
        for count in self.counts.values():
            count.copy_(reduce_sum(count))  # on the backend's device (see reduce_sum); a host sync on CUDA

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
