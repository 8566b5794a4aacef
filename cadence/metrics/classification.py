"""Single-label classification metrics, all computed from one confusion matrix of counts.

Every metric here counts the same thing, a ``[C, C]`` int64 matrix whose entry
``[t, p]`` is how many examples of target class ``t`` were predicted as class
``p`` (rows = target, columns = prediction). The counting lives once, in
:class:`ClassificationMetric`; :class:`ConfusionMatrix`, :class:`Accuracy`,
:class:`Precision`, :class:`Recall` and :class:`F1Score` only differ in which
numbers they read off the matrix.

Conventions (the same as ``sklearn.metrics`` with ``zero_division=0``):

- A class that was never predicted has precision 0; a class that is never a
  target has recall 0; F1 is ``2·tp / (predicted + actual)``, 0 when that is 0/0.
- ``average="macro"`` is the unweighted mean over the classes that appear in
  the targets *or* the predictions; classes that appear in neither (for example
  a class missing from a small validation set and never predicted) are left out
  rather than counted as 0. This equals sklearn's default, which averages over
  ``unique_labels(y_true, y_pred)``.
- ``average="weighted"`` weights each class by its number of targets.
- ``average="micro"`` pools all examples; for single-label data micro
  precision, recall and F1 all equal accuracy.
- ``Accuracy(average="macro")`` is balanced accuracy (also called unweighted
  average recall, UAR): the mean recall over the classes that appear in the
  targets, as ``sklearn.metrics.balanced_accuracy_score``.
- Per-class values (``per_class=True``) are reported for every class, under
  ``"<name>/<class name>"``; a class absent from the data gets 0.
- When nothing was counted, ``compute()`` returns the usual keys with NaN
  values, so "no data" is never mistaken for a score of 0.

Predictions are either class indices with the same shape as the targets, or
scores (logits, probabilities) with one extra trailing dimension of size ``C``,
reduced by argmax. Any leading shape works (``[N]``, ``[batch, frames]``).

>>> import torch
>>> metric = F1Score(num_classes=3, class_names=["yes", "no", "maybe"], per_class=True)
>>> metric.update(torch.tensor([0, 1, 1, 2]), targets=torch.tensor([0, 1, 2, 2]))
>>> {key: round(value, 4) for key, value in metric.compute().items()}
{'f1_macro': 0.7778, 'f1/yes': 1.0, 'f1/no': 0.6667, 'f1/maybe': 0.6667}
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from cadence.bounds import PositiveInt
from cadence.metrics.base import Metric
from cadence.registry import METRICS

ScoreAverage = Literal["macro", "micro", "weighted"]
AccuracyAverage = Literal["micro", "macro"]


class ClassificationMetric(Metric):
    """Counts a ``[C, C]`` confusion matrix; subclasses read numbers off it.

    A subclass implements :meth:`compute_from_matrix`; ``compute`` wraps it with
    the "nothing counted → NaN" rule.
    """

    def __init__(self, num_classes: PositiveInt, class_names: list[str] | None = None) -> None:
        super().__init__()
        metric = type(self).__name__
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{metric}: num_classes must be an integer >= 1, got {num_classes!r}")
        if class_names is None:
            class_names = [str(index) for index in range(num_classes)]
        class_names = list(class_names)
        if len(class_names) != num_classes:
            raise ValueError(
                f"{metric}: class_names has {len(class_names)} names but num_classes is {num_classes}"
            )
        if len(set(class_names)) != len(class_names) or not all(
            isinstance(class_name, str) and class_name for class_name in class_names
        ):
            raise ValueError(f"{metric}: class_names must be distinct non-empty strings, got {class_names}")
        self.num_classes = num_classes
        self.class_names = class_names
        self.add_count("matrix", torch.zeros(num_classes, num_classes, dtype=torch.int64))

    def update(self, predictions: Tensor, targets: Tensor) -> None:
        """Count one batch: ``predictions`` as indices (shape of ``targets``) or
        scores (shape of ``targets`` plus ``[C]``); ``targets`` as integer class indices."""
        predicted = self._as_indices(predictions, targets)
        if targets.numel() == 0:
            return
        classes = self.num_classes
        # int64 before the arithmetic below: a uint8 or int16 batch would overflow in t * C + p.
        target_flat = targets.reshape(-1).long()
        predicted_flat = predicted.reshape(-1).long().to(target_flat.device)
        # Host sync: one transfer of four numbers checks both ranges.
        low_target, high_target, low_predicted, high_predicted = torch.stack(
            [target_flat.min(), target_flat.max(), predicted_flat.min(), predicted_flat.max()]
        ).tolist()
        ranges = (("targets", low_target, high_target), ("predictions", low_predicted, high_predicted))
        for what, low, high in ranges:
            if low < 0 or high >= classes:
                raise ValueError(
                    f"{type(self).__name__}: {what} must be class indices in [0, {classes}), "
                    f"got values from {low} to {high}"
                )
        # Each (target, prediction) pair becomes one cell index of the flattened matrix,
        # so a single bincount on the batch's device counts the whole batch.
        cells = torch.bincount(target_flat * classes + predicted_flat, minlength=classes * classes)
        self.counts["matrix"] += cells.reshape(classes, classes).cpu()  # host sync on accelerators

    def _as_indices(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """Check shapes and dtypes; reduce scores to class indices by argmax."""
        metric = type(self).__name__
        if not isinstance(predictions, Tensor) or not isinstance(targets, Tensor):
            raise ValueError(
                f"{metric}: predictions and targets must be tensors, "
                f"got {type(predictions).__name__} and {type(targets).__name__}"
            )
        if not _is_integer(targets):
            raise ValueError(f"{metric}: targets must be integer class indices, got dtype {targets.dtype}")
        if predictions.shape == targets.shape:
            if not _is_integer(predictions):
                raise ValueError(
                    f"{metric}: predictions shaped like targets {tuple(targets.shape)} must be integer "
                    f"class indices, got dtype {predictions.dtype} (scores need a trailing dimension "
                    f"of size {self.num_classes})"
                )
            return predictions
        if predictions.shape == (*targets.shape, self.num_classes) and predictions.dtype != torch.bool:
            # argmax keeps the first of tied maxima, so ties resolve to the lower class index.
            return predictions.argmax(dim=-1)
        raise ValueError(
            f"{metric}: predictions must have shape {tuple(targets.shape)} (class indices) or "
            f"{(*targets.shape, self.num_classes)} (scores), got {tuple(predictions.shape)} "
            f"with dtype {predictions.dtype}"
        )

    def compute(self) -> dict[str, float]:
        results = self.compute_from_matrix(self.counts["matrix"])
        if int(self.counts["matrix"].sum()) == 0:
            return {key: math.nan for key in results}
        return results

    def compute_from_matrix(self, matrix: Tensor) -> dict[str, float]:
        """The metric's numbers for a confusion matrix (rows = target, columns = prediction)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement compute_from_matrix()")

    def _per_class(self, name: str, values: Tensor) -> dict[str, float]:
        return {f"{name}/{class_name}": value for class_name, value in zip(self.class_names, values.tolist())}


@METRICS.register("confusion_matrix")
class ConfusionMatrix(ClassificationMetric):
    """The confusion matrix itself, with accuracy and macro precision, recall and F1.

    ``compute()`` gives ``accuracy``, ``precision_macro``, ``recall_macro`` and
    ``f1_macro`` (plus ``precision/<class>``, ``recall/<class>``, ``f1/<class>``
    with ``per_class=True``); :meth:`matrix` gives the counts for results.json.

    >>> import torch
    >>> metric = ConfusionMatrix(num_classes=2)
    >>> metric.update(torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]]), torch.tensor([0, 0, 1]))
    >>> metric.matrix()
    [[1, 1], [1, 0]]
    >>> metric.compute()["accuracy"]
    0.3333333333333333
    """

    name = "confusion_matrix"

    def __init__(
        self,
        num_classes: PositiveInt,
        class_names: list[str] | None = None,
        per_class: bool = False,
    ) -> None:
        super().__init__(num_classes, class_names)
        self.per_class = per_class

    def matrix(self) -> list[list[int]]:
        """The counts as nested lists of ints: ``matrix()[target][prediction]``."""
        return self.counts["matrix"].tolist()

    def compute_from_matrix(self, matrix: Tensor) -> dict[str, float]:
        scores = class_scores(matrix)
        results = {"accuracy": _accuracy(matrix)}
        for score in ("precision", "recall", "f1"):
            results[f"{score}_macro"] = _average(scores, score, "macro")
        if self.per_class:
            for score in ("precision", "recall", "f1"):
                results.update(self._per_class(score, scores[score]))
        return results


@METRICS.register("accuracy")
class Accuracy(ClassificationMetric):
    """Fraction of examples predicted correctly.

    ``average="micro"`` (default) gives ``accuracy``; ``average="macro"`` gives
    ``accuracy_macro``, balanced accuracy (mean per-class recall over the classes
    present in the targets). ``per_class=True`` adds ``accuracy/<class>``, the
    fraction of that class's examples predicted correctly (its recall).

    >>> import torch
    >>> metric = Accuracy(num_classes=2, average="macro")
    >>> metric.update(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 1]))
    >>> metric.update(torch.tensor([0]), torch.tensor([1]))
    >>> metric.compute()
    {'accuracy_macro': 0.75}
    """

    name = "accuracy"

    def __init__(
        self,
        num_classes: PositiveInt,
        class_names: list[str] | None = None,
        average: AccuracyAverage = "micro",
        per_class: bool = False,
    ) -> None:
        super().__init__(num_classes, class_names)
        _check_average(type(self).__name__, average, ("micro", "macro"))
        self.average = average
        self.per_class = per_class

    def compute_from_matrix(self, matrix: Tensor) -> dict[str, float]:
        recall = class_scores(matrix)["recall"]
        if self.average == "micro":
            results = {self.name: _accuracy(matrix)}
        else:
            in_targets = matrix.sum(dim=1) > 0
            results = {f"{self.name}_macro": _mean(recall[in_targets])}
        if self.per_class:
            results.update(self._per_class(self.name, recall))
        return results


class _AveragedScore(ClassificationMetric):
    """Shared body of Precision, Recall and F1Score: one per-class score, averaged."""

    def __init__(
        self,
        num_classes: PositiveInt,
        class_names: list[str] | None = None,
        average: ScoreAverage = "macro",
        per_class: bool = False,
    ) -> None:
        super().__init__(num_classes, class_names)
        _check_average(type(self).__name__, average, ("macro", "micro", "weighted"))
        self.average = average
        self.per_class = per_class

    def compute_from_matrix(self, matrix: Tensor) -> dict[str, float]:
        scores = class_scores(matrix)
        if self.average == "micro":
            average = _accuracy(matrix)  # pooled tp / pooled predictions = pooled tp / pooled targets
        else:
            average = _average(scores, self.name, self.average)
        results = {f"{self.name}_{self.average}": average}
        if self.per_class:
            results.update(self._per_class(self.name, scores[self.name]))
        return results


@METRICS.register("precision")
class Precision(_AveragedScore):
    """Of the examples predicted as a class, the fraction that are that class.

    Keys: ``precision_<average>`` and, with ``per_class=True``, ``precision/<class>``.
    A class that was never predicted has precision 0.
    """

    name = "precision"


@METRICS.register("recall")
class Recall(_AveragedScore):
    """Of the examples of a class, the fraction predicted as that class.

    Keys: ``recall_<average>`` and, with ``per_class=True``, ``recall/<class>``.
    A class that is never a target has recall 0.
    """

    name = "recall"


@METRICS.register("f1")
class F1Score(_AveragedScore):
    """Harmonic mean of precision and recall, per class: ``2·tp / (predicted + actual)``.

    Keys: ``f1_<average>`` and, with ``per_class=True``, ``f1/<class>``.
    """

    name = "f1"


def class_scores(matrix: Tensor) -> dict[str, Tensor]:
    """Per-class ``precision``, ``recall``, ``f1`` (float64, 0 where undefined),
    plus ``support`` (targets per class) and ``present`` (in targets or predictions).

    >>> class_scores(torch.tensor([[2, 0], [1, 1]]))["precision"].tolist()
    [0.6666666666666666, 1.0]
    """
    counts = matrix.to(torch.float64)
    correct = counts.diagonal()
    predicted = counts.sum(dim=0)  # column sums: how often each class was predicted
    actual = counts.sum(dim=1)  # row sums: how often each class is the target
    return {
        "precision": _divide_or_zero(correct, predicted),
        "recall": _divide_or_zero(correct, actual),
        "f1": _divide_or_zero(2 * correct, predicted + actual),
        "support": actual,
        "present": (predicted + actual) > 0,
    }


def _divide_or_zero(numerator: Tensor, denominator: Tensor) -> Tensor:
    # zero_division=0: an undefined ratio (0/0) counts as 0, never NaN, so one absent
    # class cannot turn a macro average into NaN.
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.zeros_like(numerator))


def _accuracy(matrix: Tensor) -> float:
    total = int(matrix.sum())
    return int(matrix.diagonal().sum()) / total if total else math.nan


def _average(scores: dict[str, Tensor], score: str, average: str) -> float:
    values = scores[score]
    if average == "macro":
        return _mean(values[scores["present"]])
    support = scores["support"]  # average == "weighted"
    total = float(support.sum())
    return float((values * support).sum()) / total if total else math.nan


def _mean(values: Tensor) -> float:
    return float(values.mean()) if values.numel() else math.nan


def _check_average(metric: str, average: str, allowed: tuple[str, ...]) -> None:
    if average not in allowed:
        raise ValueError(f"{metric}: average must be one of {list(allowed)}, got {average!r}")


def _is_integer(tensor: Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)
