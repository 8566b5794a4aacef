"""A dict of Stateful things as one plain state, and back, random generators last."""

from __future__ import annotations

import pytest
import torch

from cadence.checkpoint.snapshot import capture, restore
from cadence.errors import CheckpointError
from cadence.state import TrainState


class Counter:
    def __init__(self):
        self.count = 0

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def test_components_lists_dicts_and_absent_ones_round_trip():
    model, state, counters = torch.nn.Linear(2, 2), TrainState(epoch=3), {"0:Counter": Counter()}
    counters["0:Counter"].count = 5
    saved = capture({"model": model, "state": state, "metrics": [Counter()], "callbacks": counters, "scheduler": None})
    fresh_model, fresh_state, fresh_counters = torch.nn.Linear(2, 2), TrainState(), {"0:Counter": Counter()}
    restore({"model": fresh_model, "state": fresh_state, "metrics": [Counter()], "callbacks": fresh_counters, "scheduler": None}, saved)
    assert torch.equal(fresh_model.weight, model.weight) and fresh_state.epoch == 3 and fresh_counters["0:Counter"].count == 5


def test_random_generators_are_restored_last():
    class DrawsOnLoad(Counter):
        def load_state_dict(self, state):
            torch.rand(3)  # a component that draws while loading must not shift the restored stream

    saved = capture({"component": DrawsOnLoad()})
    expected = torch.rand(4)
    restore({"component": DrawsOnLoad()}, saved)
    assert torch.equal(torch.rand(4), expected)


def test_a_callback_missing_from_the_checkpoint_is_named():
    saved = capture({"callbacks": {"0:Counter": Counter()}})
    with pytest.raises(CheckpointError, match="no state for 1:Counter in 'callbacks'"):
        restore({"callbacks": {"0:Counter": Counter(), "1:Counter": Counter()}}, saved)
