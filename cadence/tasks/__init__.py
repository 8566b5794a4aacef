"""Tasks: what is learned from a batch (model + loss + predictions)."""

from cadence.tasks.base import StepOutput, Task, check_task
from cadence.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask", "StepOutput", "Task", "check_task"]
