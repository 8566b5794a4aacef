"""Metrics: counts that add up across batches and ranks, turned into numbers at the end.

See :mod:`cadence.metrics.base` for the contract and
:mod:`cadence.metrics.classification` for the conventions (zero division,
macro averaging) of the classification metrics.

Each metric class is registered in :data:`cadence.registry.METRICS` under the name recipes
use; a classification metric is built from ``num_classes``, an optional ``class_names`` and
its own typed keyword options.

>>> import torch
>>> from cadence.registry import METRICS
>>> metric = METRICS.get("accuracy")(num_classes=3)
>>> metric.update(torch.tensor([0, 2, 1]), torch.tensor([0, 2, 2]))
>>> round(metric.compute()["accuracy"], 4)
0.6667
"""

from __future__ import annotations

from cadence.metrics.base import Metric
from cadence.metrics.classification import (
    Accuracy,
    ClassificationMetric,
    ConfusionMatrix,
    F1Score,
    Precision,
    Recall,
)
from cadence.metrics.error_rate import (
    CharacterErrorRate,
    ErrorRate,
    WordErrorRate,
    edit_operations,
    error_counts,
    utterance_errors,
)
from cadence.metrics.mean import Mean

__all__ = [
    "Accuracy",
    "CharacterErrorRate",
    "ClassificationMetric",
    "ConfusionMatrix",
    "ErrorRate",
    "F1Score",
    "Mean",
    "Metric",
    "Precision",
    "Recall",
    "WordErrorRate",
    "edit_operations",
    "error_counts",
    "utterance_errors",
]
