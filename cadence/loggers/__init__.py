"""Experiment trackers beside ``metrics.jsonl`` and TensorBoard (``experiment.loggers``): the
interface (:class:`MetricLogger`) and the built-ins, ``csv`` and ``mlflow`` (the latter imports
MLflow only when a run uses it)."""

from cadence.loggers.base import MetricLogger
from cadence.loggers.csv_logger import CSVLogger
from cadence.loggers.mlflow_logger import MLflowLogger

__all__ = ["CSVLogger", "MLflowLogger", "MetricLogger"]
