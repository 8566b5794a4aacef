"""When to save (SaveTriggers), what to keep, and what "best" means."""

from __future__ import annotations

import math

import pytest

from cadence.checkpoint import retention
from cadence.checkpoint.retention import (
    CheckpointEntry, CheckpointPolicy, SaveTriggers, best_first, improves, is_better, ranked_monitors,
)


def test_a_step_save_due_on_the_epochs_last_batch_waits_for_the_epochs_end():
    triggers = SaveTriggers(CheckpointPolicy(every_epochs=None, every_steps=3))
    assert not triggers.should_save("step", global_step=2)
    assert triggers.should_save("step", global_step=3)
    assert not triggers.should_save("step", global_step=6, last_batch=True)
    assert triggers.should_save("epoch", epochs_completed=1)  # the deferred step save
    triggers.saved((1, 6))
    assert not triggers.should_save("epoch", epochs_completed=2)


def test_an_epoch_save_comes_every_n_epochs_or_on_a_new_best():
    triggers = SaveTriggers(CheckpointPolicy(every_epochs=2))
    assert not triggers.should_save("epoch", epochs_completed=1)
    assert triggers.should_save("epoch", epochs_completed=1, improved=True)
    assert triggers.should_save("epoch", epochs_completed=2)


def test_the_final_save_is_skipped_when_this_position_was_saved_last():
    triggers = SaveTriggers(CheckpointPolicy())
    triggers.saved((3, 30))
    assert not triggers.should_save("final", position=(3, 30))
    assert triggers.should_save("final", position=(3, 31))


def test_a_save_every_n_minutes_counts_from_the_last_save(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(retention.time, "monotonic", lambda: clock[0])
    triggers = SaveTriggers(CheckpointPolicy(every_epochs=None, every_minutes=1.0))
    clock[0] += 59
    assert not triggers.should_save("step", global_step=1)
    clock[0] += 2
    assert triggers.should_save("step", global_step=2)
    triggers.saved((0, 2))
    assert not triggers.should_save("step", global_step=3)


def test_better_is_strict_and_nan_never_is():
    assert is_better(0.5, None, "min") and is_better(0.4, 0.5, "min") and not is_better(0.5, 0.5, "min")
    assert is_better(0.6, 0.5, "max") and not is_better(0.4, 0.5, "max")
    assert not is_better(math.nan, None, "min")


@pytest.mark.parametrize("mode, expected", [("min", ["b", "d", "a"]), ("max", ["a", "b", "d"])])
def test_best_first_ranks_finite_values_with_ties_to_the_earliest(mode, expected):
    entries = [CheckpointEntry("a", 1, 0.9), CheckpointEntry("b", 2, 0.5), CheckpointEntry("c", 3, None),
               CheckpointEntry("d", 4, 0.5), CheckpointEntry("e", 5, math.inf), CheckpointEntry("f", 6, math.nan)]
    assert [entry.name for entry in best_first(entries, mode)] == expected


def test_tie_breakers_rank_checkpoints_of_equal_value():
    # b and d tie on the monitored value; d has the better tie-breaker (lower loss), so it goes first.
    entries = [CheckpointEntry("a", 1, 0.9, (0.1,)), CheckpointEntry("b", 2, 0.5, (0.4,)), CheckpointEntry("d", 4, 0.5, (0.3,)),
               CheckpointEntry("e", 5, 0.5, (math.inf,))]  # a NaN tie-breaker ranks last among its ties
    assert [entry.name for entry in best_first(entries, "min")] == ["d", "b", "e", "a"]


@pytest.mark.parametrize(("values", "best", "modes", "expected"), [
    ([0.0, 0.3], [0.0, 0.5], ["min", "min"], True),    # equal WER, lower loss
    ([0.0, 0.7], [0.0, 0.5], ["min", "min"], False),   # equal WER, higher loss
    ([0.1, 0.1], [0.0, 0.5], ["min", "min"], False),   # a worse WER: the loss does not matter
    ([1.0, 0.2], [1.0, 0.3], ["max", "min"], True),    # equal accuracy (max), lower loss (min)
    ([0.0, 0.5], [0.0, 0.5], ["min", "min"], False),   # equal on all: not better (the earliest stays)
    ([0.0, math.nan], [0.0, 0.5], ["min", "min"], False),
    ([0.0, 0.5], None, ["min", "min"], True),          # the first validation
])
def test_improves_is_decided_by_the_first_value_that_differs(values, best, modes, expected):
    assert improves(values, best, modes) is expected


@pytest.mark.parametrize(("monitor", "mode", "message"), [
    (["val/wer", "val/loss"], ["min"], "mode lists 1 modes for the 2 monitored keys"),
    ([], "min", "monitor must be a validation key or a non-empty list"),
    (["val/wer"], "lowest", "mode must be 'min' or 'max'"),
])
def test_monitor_lists_that_do_not_fit_are_refused(monitor, mode, message):
    with pytest.raises(ValueError, match=message):
        ranked_monitors(monitor, mode)
