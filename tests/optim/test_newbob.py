"""Newbob and plateau against tables worked out by hand from RETURNN's rules.

Each table lists, per 1-based epoch, the validation score that epoch ends with and the rate
the rule must give it at its start (optimizer.lr = 1.0, so rates are factors too). The
comments give the arithmetic: r = (s[e-1] - s[e-2]) / |s[e-1]|, decay when r > threshold.
"""

from __future__ import annotations

import json

import pytest
import torch

from cadence.optim.control import LearningRateSchedule


def run(phases: list[dict], scores: list[float], lr: float = 1.0, mode: str = "min") -> tuple[list[float], LearningRateSchedule]:
    """Drive a schedule through len(scores) epochs of 10 updates; the rate each epoch started at."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = LearningRateSchedule(optimizer, phases, mode=mode)
    rates = []
    for epoch, score in enumerate(scores):
        schedule.start_epoch(epoch, step=10 * epoch)
        rates.append(optimizer.param_groups[0]["lr"])
        schedule.end_epoch(epoch, score)
    return rates, schedule


def test_relative_newbob_decays_when_the_score_improves_by_less_than_one_percent():
    scores = [10.0, 9.0, 8.95, 8.0, 8.0, 7.0]
    expected = [
        1.0,  # e1: no scores yet
        1.0,  # e2: one score, nothing to compare
        1.0,  # e3: (9 - 10) / 9 = -0.111 <= -0.01: kept
        0.5,  # e4: (8.95 - 9) / 8.95 = -0.0056 > -0.01: decay
        0.5,  # e5: (8 - 8.95) / 8 = -0.119: kept
        0.25,  # e6: (8 - 8) / 8 = 0: decay
    ]
    rates, schedule = run([{"kind": "newbob"}], scores)
    assert rates == pytest.approx(expected)
    decision = schedule.history[3]["decision"]
    assert decision["action"] == "decay" and decision["compared"] == [2, 3]
    assert decision["relative_error"] == pytest.approx((8.95 - 9.0) / 8.95)
    assert [record["score"] for record in schedule.history] == scores


def test_the_relative_error_over_the_old_score_decides_differently_at_the_edge():
    scores = [100.0, 99.005, 99.0]  # e3: -0.995 / 99.005 = -0.01005 (kept); -0.995 / 100 = -0.00995 (decay)
    assert run([{"kind": "newbob_rel"}], scores)[0] == pytest.approx([1.0, 1.0, 1.0])
    assert run([{"kind": "newbob", "divide_by_old": True}], scores)[0] == pytest.approx([1.0, 1.0, 0.5])
    # Exactly at the threshold (-1 / 100 == -0.01) is not above it: kept.
    assert run([{"kind": "newbob", "divide_by_old": True}], [100.0, 99.0, 99.0])[0] == pytest.approx([1.0, 1.0, 1.0])


def test_absolute_newbob_compares_the_difference_with_its_threshold():
    scores = [10.0, 9.0, 8.8, 8.0, 7.9]
    expected = [1.0, 1.0, 1.0, 0.5, 0.5]  # e3: -1 <= -0.5 kept; e4: -0.2 > -0.5 decay; e5: -0.8 kept
    assert run([{"kind": "newbob_abs", "threshold": -0.5}], scores)[0] == pytest.approx(expected)


def test_growth_when_the_score_improves_and_decay_never_below_the_minimum():
    assert run([{"kind": "newbob", "growth": 1.5}], [10.0, 9.0, 8.0])[0] == pytest.approx([1.0, 1.0, 1.5])
    flat = [10.0] * 6  # r = 0 every epoch: decay from e3 on
    assert run([{"kind": "newbob", "min_learning_rate": 0.3}], flat)[0] == pytest.approx([1.0, 1.0, 0.5, 0.3, 0.3, 0.3])


def test_a_new_rate_is_kept_for_min_epochs_per_new_lr():
    flat = [10.0] * 7
    assert run([{"kind": "newbob"}], flat)[0] == pytest.approx([1.0, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125])
    expected = [
        1.0,  # e1
        1.0,  # e2: one epoch so far, fewer than 2
        0.5,  # e3: e1, e2 both at 1.0: the rule runs, r = 0: decay
        0.5,  # e4: e2 at 1.0, e3 at 0.5 differ: kept
        0.25,  # e5: e3, e4 at 0.5: decay
        0.25,  # e6: kept
        0.125,  # e7: decay
    ]
    assert run([{"kind": "newbob", "min_epochs_per_new_lr": 2}], flat)[0] == pytest.approx(expected)


def test_multi_epoch_newbob_averages_relative_errors_and_updates_every_interval():
    scores = [10.0, 9.0, 8.95, 8.9, 8.0, 7.0, 7.0]
    expected = [
        1.0,  # e1: 1 % 2 == 1 but no epochs
        1.0,  # e2: not an update epoch
        1.0,  # e3: window e1, e2: mean(-0.111): kept
        1.0,  # e4: not an update epoch
        0.5,  # e5: window e2..e4: mean(-0.00559, -0.00562) > -0.01: decay
        0.5,  # e6: not an update epoch
        0.5,  # e7: window e4..e6: mean(-0.1125, -0.1429): kept
    ]
    phase = {"kind": "newbob_multi_epoch", "num_epochs": 2, "update_interval": 2}
    rates, schedule = run([phase], scores)
    assert rates == pytest.approx(expected)
    assert schedule.history[4]["decision"]["compared"] == [2, 3, 4]


def test_accuracy_rises_so_max_mode_negates_it():
    scores = [0.5, 0.6, 0.601]  # e3: -0.1 / 0.6 = -0.167 kept; e4: -0.001 / 0.601 = -0.0017 decay
    assert run([{"kind": "newbob"}], [*scores, 0.7], mode="max")[0] == pytest.approx([1.0, 1.0, 1.0, 0.5])


def test_plateau_decays_after_patience_epochs_without_improvement():
    scores = [10.0, 9.0, 9.5, 9.2, 9.3, 8.0, 8.1]
    expected = [
        1.0,  # e1
        1.0,  # e2: best 10
        1.0,  # e3: best 9
        1.0,  # e4: 9.5 is one bad epoch (patience 1)
        0.5,  # e5: 9.2 is the second: decay, count restarts
        0.5,  # e6: 9.3: one bad epoch
        0.5,  # e7: 8.0 is the best
    ]
    assert run([{"kind": "plateau", "patience": 1, "threshold": 0.0}], scores)[0] == pytest.approx(expected)


def test_newbob_continues_from_predefined_rates_comparing_their_epochs():
    # RETURNN's learning_rates for epochs 1-3, then Newbob from the last of them (0.3).
    scores = [10.0, 9.0, 8.99, 8.0]
    phases = [{"kind": "learning_rates", "rates": [0.1, 0.2, 0.3]}, {"kind": "newbob"}]
    rates, schedule = run(phases, scores)
    # e4: (8.99 - 9) / 8.99 = -0.0011 > -0.01: 0.3 decays to 0.15
    assert rates == pytest.approx([0.1, 0.2, 0.3, 0.15])
    assert [record["kind"] for record in schedule.history] == ["learning_rates"] * 3 + ["newbob"]


def test_a_score_of_zero_is_no_division_by_zero_and_the_history_is_json():
    rates, schedule = run([{"kind": "newbob"}], [0.5, 0.0, 0.0, 0.0])
    assert rates == pytest.approx([1.0, 1.0, 1.0, 0.5])  # e3: improved to 0 (-inf): kept; e4: 0 -> 0: decay
    assert schedule.history[2]["decision"]["relative_error"] == "-inf"
    json.dumps(schedule.state_dict(), allow_nan=False)
