"""Tasks: what is learned from a batch (model + loss + predictions)."""

from cadence.tasks.base import StepOutput, Task, check_task
from cadence.tasks.classification import ClassificationTask
from cadence.tasks.ctc import CTCTask
from cadence.tasks.framewise import FramewiseTask
from cadence.tasks.pase import PASETask
from cadence.tasks.seq2seq import Seq2SeqTask
from cadence.tasks.transcription import DecodingOptions

__all__ = ["CTCTask", "ClassificationTask", "DecodingOptions", "FramewiseTask", "PASETask", "Seq2SeqTask", "StepOutput", "Task", "check_task"]
