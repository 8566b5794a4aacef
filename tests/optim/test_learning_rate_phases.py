"""The shapes of learning-rate phases, their sequence, per-group scaling, state and validation."""

from __future__ import annotations

import json
import math
import re

import pydantic
import pytest
import torch

from cadence.optim.control import LearningRateSchedule
from cadence.registry import SCHEDULERS


def optimizer_with(*rates: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": rate} for rate in rates], lr=rates[0])


def rates_by_step(phases: list[dict], steps: int, steps_per_epoch: int = 1000, lr: float = 1.0) -> list[float]:
    """The rate of each update, epochs of ``steps_per_epoch`` updates."""
    optimizer = optimizer_with(lr)
    schedule = LearningRateSchedule(optimizer, phases)
    rates = []
    for step in range(steps):
        epoch = step // steps_per_epoch
        if step % steps_per_epoch == 0:
            schedule.start_epoch(epoch, step)
        schedule.before_update(step, epoch)
        rates.append(optimizer.param_groups[0]["lr"])
        if step % steps_per_epoch == steps_per_epoch - 1:
            schedule.end_epoch(epoch, None)
    return rates


def test_linear_and_exponential_warmup_reach_the_peak_on_their_last_update():
    assert rates_by_step([{"kind": "warmup", "steps": 4}], 6) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert rates_by_step([{"kind": "warmup", "steps": 4, "start": 0.2}], 4) == pytest.approx([0.4, 0.6, 0.8, 1.0])
    # geometric from 0.01: 0.01 ** (1 - k/2) for k = 1, 2
    assert rates_by_step([{"kind": "warmup", "steps": 2, "shape": "exponential", "start": 0.01}], 3) == pytest.approx([0.1, 1.0, 1.0])


def test_decays_follow_their_formulas_from_where_the_previous_phase_ended():
    constant_then_cosine = [{"kind": "constant", "factor": 0.5, "steps": 2}, {"kind": "cosine", "steps": 4, "final": 0.1}]
    cosine = [0.1 + 0.4 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)]
    assert rates_by_step(constant_then_cosine, 8) == pytest.approx([0.5, 0.5, *cosine, 0.1])
    polynomial = [{"kind": "polynomial", "steps": 4, "power": 2.0}]
    assert rates_by_step(polynomial, 5) == pytest.approx([(1 - t / 4) ** 2 for t in range(5)])
    inverse_sqrt = [{"kind": "warmup", "steps": 2}, {"kind": "inverse_sqrt", "scale_steps": 4}]
    assert rates_by_step(inverse_sqrt, 5) == pytest.approx([0.5, 1.0, *[math.sqrt(4 / (4 + t)) for t in range(3)]])
    noam = [{"kind": "noam", "warmup_steps": 4}]
    assert rates_by_step(noam, 6) == pytest.approx([0.25, 0.5, 0.75, 1.0, math.sqrt(4 / 5), math.sqrt(4 / 6)])


def test_exponential_every_epochs_is_pase_linear_scheduler():
    # PASE: multiply by decay_factor 0.5 every lr_update_interval = 2 epochs (3 updates an epoch).
    rates = rates_by_step([{"kind": "exponential", "gamma": 0.5, "every_epochs": 2}], 18, steps_per_epoch=3)
    assert rates[::3] == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    assert rates_by_step([{"kind": "exponential", "gamma": 0.5, "every_steps": 2}], 5) == pytest.approx([1, 1, 0.5, 0.5, 0.25])


def test_a_phase_in_epochs_after_one_in_steps_counts_from_where_it_began():
    # Warmup over 5 updates ends inside epoch 2 (4 updates an epoch); the decay's epochs count from there.
    phases = [{"kind": "warmup", "steps": 5}, {"kind": "exponential", "gamma": 0.5, "every_epochs": 1}]
    rates = rates_by_step(phases, 16, steps_per_epoch=4)
    assert rates[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert rates[5:8] == pytest.approx([1.0] * 3)  # the rest of epoch 2: the decay's epoch 0
    assert rates[8:12] == pytest.approx([0.5] * 4) and rates[12:] == pytest.approx([0.25] * 4)


def test_every_parameter_group_is_scaled_by_the_same_factor():
    optimizer = optimizer_with(1.0, 0.1)
    schedule = LearningRateSchedule(optimizer, [{"kind": "warmup", "steps": 2}])
    schedule.start_epoch(0, 0)
    schedule.before_update(0, 0)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.5, 0.05])


def test_the_state_is_json_and_a_restored_schedule_goes_on_identically():
    phases = [{"kind": "warmup", "steps": 3}, {"kind": "newbob"}]
    scores = [5.0, 4.99, 4.98, 4.0, 3.99, 3.98]

    def drive(schedule, optimizer, epochs):
        rates = []
        for epoch in epochs:
            schedule.start_epoch(epoch, 2 * epoch)
            for step in (2 * epoch, 2 * epoch + 1):
                schedule.before_update(step, epoch)
                rates.append(optimizer.param_groups[0]["lr"])
            schedule.end_epoch(epoch, scores[epoch])
        return rates

    straight_optimizer = optimizer_with(1.0)
    straight = LearningRateSchedule(straight_optimizer, phases)
    expected = drive(straight, straight_optimizer, range(6))
    first_optimizer, second_optimizer = optimizer_with(1.0), optimizer_with(1.0)
    first = LearningRateSchedule(first_optimizer, phases)
    head = drive(first, first_optimizer, range(3))
    second = LearningRateSchedule(second_optimizer, phases)
    second.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
    assert head + drive(second, second_optimizer, range(3, 6)) == expected
    assert second.history == straight.history
    assert 0.25 in expected  # Newbob decayed twice on the flat scores: the comparison covers its decisions


def test_a_saved_schedule_of_other_phases_is_refused():
    saved = LearningRateSchedule(optimizer_with(1.0), [{"kind": "warmup", "steps": 1}, {"kind": "constant"}])
    saved.before_update(5, 0)
    other = LearningRateSchedule(optimizer_with(1.0), [{"kind": "constant"}])
    with pytest.raises(ValueError, match="phase 1 of 2; this one has 1 phases"):
        other.load_state_dict(saved.state_dict())


@pytest.mark.parametrize("phases, message", [
    ([{"kind": "cosine"}], "needs its length"),
    ([{"kind": "constant"}, {"kind": "newbob"}], "phase 0 (constant) has no length"),
    ([{"kind": "newbob", "num_epochs": 3}], "only apply to kind newbob_multi_epoch"),
    ([{"kind": "newbob_abs", "divide_by_old": True}], "only apply to the relative rules"),
    ([{"kind": "warmup", "steps": 3, "epochs": 1}], "not both"),
    ([{"kind": "warmup", "steps": 3, "shape": "exponential"}], "starts above 0"),
    ([{"kind": "learning_rates", "rates": {2: 0.1}}], "starts at epoch 1"),
    ([{"kind": "newbob", "decay": 1.5}], "less than 1"),
    ([{"kind": "warmup", "step": 3}], "step"),
    ([{"kind": "cyclic"}], "cyclic"),
])
def test_a_recipe_mistake_is_refused_naming_the_phase(phases, message):
    with pytest.raises(pydantic.ValidationError, match=re.escape(message)) as caught:
        SCHEDULERS.schema("phases").model_validate({"phases": phases})
    assert caught.value.errors()[0]["loc"][0] == "phases"
