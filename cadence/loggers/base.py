"""The interface of an experiment tracker: where a run's figures go besides ``metrics.jsonl``.

:class:`~cadence.experiment.Experiment` drives every logger of a run (``experiment.loggers``
in a recipe; TensorBoard, the default, is the experiment's own writer). ``metrics.jsonl`` is
always written: it is what a resumed run rewinds by and what ``cadence ls`` reads. The hooks,
in the order a run calls them::

    open(directory)                      the experiment opens its folder
    rewind(global_step)                  resumed from a checkpoint: what came after it is logged again
    start(config, resumed)               record_run, when fit starts (resumed: this folder's run goes on)
    log_metrics(values, step, epoch, split)   every logged line
    log_text(tag, text, step)            hypotheses samples
    finish(status)                       "finished", "stopped" or "crashed" (run_status's words)
    close()                              the experiment stops: flush and let go

Register your own with ``@LOGGERS.register("name")`` in a module listed under ``imports:``,
then name it in ``experiment.loggers`` (``[tensorboard, {name: my_logger, option: 1}]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class MetricLogger:
    """A tracker of one run. Every hook does nothing by default; override those you need."""

    def open(self, directory: Path) -> None:
        """The experiment folder this logger serves (it exists)."""

    def start(self, config: dict[str, Any] | None, resumed: bool) -> None:
        """A fit starts, with its resolved ``config`` (``resumed``: from a checkpoint of this folder)."""

    def log_metrics(self, values: dict[str, float], step: int, epoch: int, split: str) -> None:
        """One logged line: ``values`` by name (``train/loss``, ``val/wer``), at ``step``."""

    def log_text(self, tag: str, text: str, step: int) -> None:
        """A text sample (Markdown), e.g. hypotheses against references."""

    def rewind(self, global_step: int) -> None:
        """The run resumed from the checkpoint of ``global_step``: the lines logged after it by
        the run that stopped will be logged again (exactly: the resume is bit-identical)."""

    def finish(self, status: str) -> None:
        """How the run ended: ``finished``, ``stopped`` (it may be resumed) or ``crashed``."""

    def close(self) -> None:
        """Flush and release what the logger holds."""
