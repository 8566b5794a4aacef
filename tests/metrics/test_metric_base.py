"""The Metric base class: declared counts get reset, state_dict, load_state_dict and sync."""

from __future__ import annotations

import pytest
import torch

from cadence.metrics import Metric


class CorrectCount(Metric):
    """A minimal metric: how many predictions equal their target."""

    name = "correct"

    def __init__(self) -> None:
        super().__init__()
        self.add_count("correct", torch.zeros((), dtype=torch.int64))
        self.add_count("per_position", torch.zeros(2, dtype=torch.float64))

    def update(self, predictions, targets):
        hits = predictions == targets
        self.counts["correct"] += int(hits.sum())
        self.counts["per_position"] += hits.to(torch.float64)

    def compute(self):
        return {self.name: float(self.counts["correct"])}


def test_reset_returns_counts_to_zero():
    metric = CorrectCount()
    metric.update(torch.tensor([1, 2]), torch.tensor([1, 2]))
    assert metric.compute() == {"correct": 2.0}
    metric.reset()
    assert metric.compute() == {"correct": 0.0}
    assert metric.counts["per_position"].tolist() == [0.0, 0.0]


def test_state_dict_round_trip_keeps_dtypes_and_is_a_copy():
    metric = CorrectCount()
    metric.update(torch.tensor([1, 0]), torch.tensor([1, 2]))
    state = metric.state_dict()
    assert list(state) == ["correct", "per_position"]
    assert state["correct"].dtype == torch.int64 and state["per_position"].dtype == torch.float64
    restored = CorrectCount()
    restored.load_state_dict(state)
    assert restored.counts["correct"].item() == 1
    assert restored.counts["per_position"].tolist() == [1.0, 0.0]
    state["correct"] += 10
    assert metric.counts["correct"].item() == 1 and restored.counts["correct"].item() == 1


def test_load_state_dict_names_missing_and_unexpected_keys_and_changes_nothing():
    metric = CorrectCount()
    metric.update(torch.tensor([1, 2]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"CorrectCount.load_state_dict: missing keys \['per_position'\], unexpected keys \['other'\]"):
        metric.load_state_dict({"correct": torch.tensor(5), "other": torch.tensor(1)})
    with pytest.raises(ValueError, match=r"'per_position' has shape \(3,\), expected \(2,\)"):
        metric.load_state_dict({"correct": torch.tensor(5), "per_position": torch.zeros(3, dtype=torch.float64)})
    assert metric.counts["correct"].item() == 2  # the valid key was not loaded either


def test_counts_must_be_wide_dtypes_declared_once():
    metric = CorrectCount()
    with pytest.raises(ValueError, match="count 'correct' is declared twice"):
        metric.add_count("correct", torch.zeros((), dtype=torch.int64))
    with pytest.raises(ValueError, match="count 'small' must be int64 or float64, got torch.float32"):
        metric.add_count("small", torch.zeros(()))


def test_sync_without_torch_distributed_changes_nothing():
    assert not torch.distributed.is_initialized()
    metric = CorrectCount()
    metric.update(torch.tensor([1, 2]), torch.tensor([1, 0]))
    metric.sync()
    assert metric.counts["correct"].item() == 1


def test_unimplemented_update_and_compute_say_which_class():
    with pytest.raises(NotImplementedError, match="Metric does not implement update"):
        Metric().update(torch.zeros(1), torch.zeros(1))
    with pytest.raises(NotImplementedError, match="Metric does not implement compute"):
        Metric().compute()
