"""Mean: a weighted running mean kept as a sum and a weight."""

from __future__ import annotations

import math

import pytest
import torch

from cadence.metrics import Mean


def test_weighted_by_batch_size_not_mean_of_batch_means():
    # Batches of 4 (mean loss 1.0) and 1 (mean loss 6.0): (4*1 + 1*6) / 5 = 2.0,
    # whereas the mean of the two batch means would be 3.5.
    loss = Mean("loss")
    loss.update(torch.tensor(1.0), weight=4)
    loss.update(6.0, weight=torch.tensor(1))
    assert loss.compute() == {"loss": pytest.approx(2.0)}


def test_default_weight_is_one():
    metric = Mean("score")
    for value in (1, 2, 6):
        metric.update(value)
    assert metric.compute() == {"score": pytest.approx(3.0)}


def test_nothing_added_is_nan_and_reset_clears():
    metric = Mean("loss")
    assert math.isnan(metric.compute()["loss"])
    metric.update(5.0, weight=2)
    metric.reset()
    assert math.isnan(metric.compute()["loss"])
    metric.update(5.0, weight=0)  # zero weight adds nothing
    assert math.isnan(metric.compute()["loss"])


def test_state_round_trip_and_sum_of_halves():
    first, second, whole = Mean("loss"), Mean("loss"), Mean("loss")
    for value, weight in [(1.0, 3), (2.0, 1), (4.0, 2)]:
        whole.update(value, weight)
    first.update(1.0, 3)
    second.update(2.0, 1)
    second.update(4.0, 2)
    summed = Mean("loss")
    summed.load_state_dict({key: first.state_dict()[key] + second.state_dict()[key] for key in ("sum", "weight")})
    assert summed.compute() == {"loss": pytest.approx(13.0 / 6.0)}
    assert summed.compute() == pytest.approx(whole.compute())
    assert {key: tensor.dtype for key, tensor in summed.state_dict().items()} == {"sum": torch.float64, "weight": torch.float64}


@pytest.mark.parametrize(
    ("value", "weight", "message"),
    [
        (torch.tensor([1.0, 2.0]), 1, r"value must be a scalar, got a tensor of shape \(2,\)"),
        ("1.0", 1, "value must be a number, got str"),
        (1.0, -1, "weight must be >= 0, got -1.0"),
        (1.0, float("nan"), "weight must be >= 0, got nan"),
    ],
)
def test_bad_inputs_raise_value_error(value, weight, message):
    metric = Mean("loss")
    with pytest.raises(ValueError, match=r"^Mean\('loss'\): " + message):
        metric.update(value, weight)


def test_name_is_required_and_non_empty():
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        Mean("")
