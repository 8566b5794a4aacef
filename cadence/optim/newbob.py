"""Learning rates decided once per epoch from validation scores: RETURNN's Newbob rules and a
plateau rule.

The rate of epoch ``e`` (1-based) is decided when ``e`` starts, from the *history*: one record
per epoch so far (``{"epoch", "learning_rate", "score", ...}``, scores as the validation gave
them). Lower scores are better; with ``mode="max"`` (accuracy) they are negated first. The
rules follow RETURNN's ``learning_rate_control`` (its defaults too):

- ``newbob`` / ``newbob_rel``: the relative error ``r = (s[e-1] - s[e-2]) / |s[e-1]|`` (over
  ``|s[e-2]|`` with ``divide_by_old``; also divided by ``lr / optimizer.lr`` with
  ``relative_to_learning_rate``). If ``r > threshold`` (default -0.01: the score did not
  improve by 1%) the rate is multiplied by ``decay``, never below ``min_learning_rate``;
  otherwise by ``growth`` (default 1: kept).
- ``newbob_abs``: the same with ``s[e-1] - s[e-2]`` against ``threshold``.
- ``newbob_multi_epoch``: only at epochs ``e`` with ``e % update_interval == 1`` (every epoch
  when the interval is 1), the mean of the relative errors between the last ``num_epochs + 1``
  epochs: decay above ``threshold``, growth below ``grow_threshold``.
- every Newbob rule: with ``min_epochs_per_new_lr`` = m > 1, the rate is kept while the last m
  epochs had different rates or fewer than m epochs exist.
- ``plateau``: multiply by ``factor`` once the score has not improved (by ``threshold``,
  relative) for more than ``patience`` epochs since the best, replayed over the epochs of the phase.

Without the scores a rule needs (the first epochs), the rate is kept.

>>> from cadence.optim.phases import Newbob
>>> history = [{"epoch": 1, "learning_rate": 1.0, "score": 10.0}, {"epoch": 2, "learning_rate": 1.0, "score": 9.95}]
>>> rate, decision = decide(Newbob(kind="newbob"), 3, history, previous_rate=1.0, reference=1.0)
>>> rate, decision["action"], round(decision["relative_error"], 5)
(0.5, 'decay', -0.00503)
"""

from __future__ import annotations

import math
from typing import Any, Literal

from cadence.optim.phases import Newbob, Plateau

__all__ = ["decide", "relative_error"]

Record = dict[str, Any]


def decide(
    phase: Newbob | Plateau, epoch: int, history: list[Record], previous_rate: float, reference: float,
    mode: Literal["min", "max"] = "min", first_epoch: int = 1, entry_rate: float | None = None,
) -> tuple[float, dict[str, Any]]:
    """The rate of 1-based ``epoch`` and what decided it.

    ``history``: the records of the epochs before it; ``previous_rate``: the rate the rule goes
    on from; ``reference``: ``optimizer.lr``. Plateau replays its phase's epochs (from
    ``first_epoch``) from the rate the phase began at, ``entry_rate``.
    """
    earlier = [record for record in history if record["epoch"] < epoch]
    sign = -1.0 if mode == "max" else 1.0
    scores = {record["epoch"]: None if record.get("score") is None else sign * record["score"] for record in earlier}
    if isinstance(phase, Plateau):
        own = [scores[record["epoch"]] for record in earlier if record["epoch"] >= first_epoch]
        return plateau_rate(phase, own, previous_rate if entry_rate is None else entry_rate)
    wait = phase.min_epochs_per_new_lr
    if wait > 1:
        recent = [record["learning_rate"] for record in earlier[-wait:]]
        if len(set(recent)) >= 2 or 0 < len(recent) < wait:
            return previous_rate, {"action": "keep", "reason": f"a new rate is kept for min_epochs_per_new_lr={wait} epochs"}
    if phase.kind == "newbob_multi_epoch":
        return multi_epoch_rate(phase, epoch, [record["epoch"] for record in earlier], scores, previous_rate, reference)
    if len(earlier) < 2:
        return previous_rate, {"action": "keep", "reason": "two scored epochs are needed"}
    old, new = earlier[-2]["epoch"], earlier[-1]["epoch"]
    if scores[old] is None or scores[new] is None:
        return previous_rate, {"action": "keep", "reason": f"no score for epoch {old if scores[old] is None else new}"}
    if phase.kind == "newbob_abs":
        difference = scores[new] - scores[old]
        return apply(phase, previous_rate, decay=difference > phase.threshold, grow=None,
                     decision={"compared": [old, new], "difference": difference})
    error = relative_error(phase, scores[old], scores[new], previous_rate, reference)
    return apply(phase, previous_rate, decay=error > phase.threshold, grow=None,
                 decision={"compared": [old, new], "relative_error": error})


def relative_error(phase: Newbob, old: float, new: float, rate: float, reference: float) -> float:
    """RETURNN's relative error between two epochs' scores. A score of exactly 0 (a WER of 0%)
    in the denominator gives 0 when nothing changed, else an infinity of the change's sign."""
    change = new - old
    denominator = abs(old if phase.divide_by_old else new)
    error = change / denominator if denominator else (0.0 if change == 0 else math.copysign(math.inf, change))
    if phase.relative_to_learning_rate and rate > 0:
        error /= rate / reference  # a lower rate is expected to improve less
    return error


def multi_epoch_rate(
    phase: Newbob, epoch: int, epochs: list[int], scores: dict[int, float | None], previous_rate: float, reference: float,
) -> tuple[float, dict[str, Any]]:
    num_epochs = phase.num_epochs or 5
    interval = phase.update_interval or num_epochs
    if interval > 1 and epoch % interval != 1:
        return previous_rate, {"action": "keep", "reason": f"rates change at epochs e with e % {interval} == 1"}
    window = epochs[-(num_epochs + 1):]  # one more epoch than differences
    if len(window) <= 1 or any(scores[number] is None for number in window):
        return previous_rate, {"action": "keep", "reason": "not enough scored epochs"}
    errors = [relative_error(phase, scores[a], scores[b], previous_rate, reference) for a, b in zip(window, window[1:])]
    mean = sum(errors) / len(errors)
    grow_threshold = phase.threshold if phase.grow_threshold is None else phase.grow_threshold
    return apply(phase, previous_rate, decay=mean > phase.threshold, grow=mean < grow_threshold,
                 decision={"compared": window, "mean_relative_error": mean})


def apply(phase: Newbob, rate: float, decay: bool, grow: bool | None, decision: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Decay (not below ``min_learning_rate``) or grow; ``grow=None`` grows whenever it does not decay."""
    grow = not decay if grow is None else grow
    if decay:
        return max(rate * phase.decay, phase.min_learning_rate), {**decision, "action": "decay"}
    if grow and phase.growth != 1.0:
        return rate * phase.growth, {**decision, "action": "grow"}
    return rate, {**decision, "action": "keep"}


def plateau_rate(phase: Plateau, scores: list[float | None], rate: float) -> tuple[float, dict[str, Any]]:
    """Replay the phase's scores: the rate now, and the epochs since the last improvement."""
    best, bad = None, 0
    for score in scores:
        if score is None:
            continue
        if best is None or score < best - abs(best) * phase.threshold:
            best, bad = score, 0
        else:
            bad += 1
        if bad > phase.patience:
            rate, bad = max(rate * phase.factor, phase.min_learning_rate), 0
    return rate, {"action": "plateau", "epochs_without_improvement": bad}
