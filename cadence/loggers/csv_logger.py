"""``metrics.csv``: every logged value as a row, for a spreadsheet or pandas.

One row a value (``step,epoch,split,name,value``): the names a run logs change along it (a
validation every epoch, training metrics every N steps), so columns fixed at the first line
would not hold them. A non-finite value is written as Python prints it (``nan``, ``inf``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, TextIO

from cadence.loggers.base import MetricLogger
from cadence.registry import LOGGERS
from cadence.runtime.files import json_lines, open_for_append, write_bytes_atomic, writing

HEADER = ["step", "epoch", "split", "name", "value"]


@LOGGERS.register("csv")
class CSVLogger(MetricLogger):
    """Appends to ``EXP_DIR/metrics.csv`` (``file``: another name in the folder)."""

    def __init__(self, file: str = "metrics.csv"):
        if not file or "/" in file or file.startswith("."):
            raise ValueError(f"csv.file must be a plain file name inside the experiment folder, got {file!r}")
        self.file = file
        self.path: Path | None = None
        self._handle: TextIO | None = None

    def open(self, directory: Path) -> None:
        self.path = Path(directory) / self.file
        fresh = not self.path.is_file() or self.path.stat().st_size == 0
        with writing(self.path):
            self._handle = open_for_append(self.path)
            if fresh:
                self._handle.write(",".join(HEADER) + "\n")

    def log_metrics(self, values: dict[str, float], step: int, epoch: int, split: str) -> None:
        if self._handle is None:
            return
        rows = io.StringIO()
        csv.writer(rows, lineterminator="\n").writerows(_rows({"step": step, "epoch": epoch, "split": split, **values}))
        with writing(self.path):
            self._handle.write(rows.getvalue())
            self._handle.flush()

    def rewind(self, global_step: int) -> None:
        """Rewrite the file from ``metrics.jsonl``, which the experiment has just cut back to the
        checkpoint's lines: the rows of the lines after it go, as those lines did."""
        if self._handle is None:
            return
        with writing(self.path):
            self._handle.close()
        rows = io.StringIO()
        writer = csv.writer(rows, lineterminator="\n")
        writer.writerow(HEADER)
        metrics = self.path.parent / "metrics.jsonl"
        for _, _, line in json_lines(metrics.read_text(encoding="utf-8"), metrics):
            writer.writerows(_rows(line))
        write_bytes_atomic(self.path, rows.getvalue().encode("utf-8"))
        with writing(self.path):
            self._handle = open_for_append(self.path)

    def close(self) -> None:
        if self._handle is not None:
            with writing(self.path):
                self._handle.close()
            self._handle = None


def _rows(line: dict[str, Any]) -> list[list[Any]]:
    """The rows of one metrics line (as metrics.jsonl holds it: step, epoch, split, time, values)."""
    values = {name: value for name, value in line.items() if name not in ("step", "epoch", "split", "time")}
    return [[line["step"], line["epoch"], line["split"], name, repr(float("nan") if value is None else float(value))]
            for name, value in values.items()]
