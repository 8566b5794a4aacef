"""One run's folder: logs, metrics, TensorBoard curves, config, provenance, results.

Layout::

    EXP_DIR/
      config.yaml  config.sha256  provenance.json  code/     (written by cadence.build / the CLI)
      train.log  metrics.jsonl  tensorboard/  checkpoints/  results.json

>>> import tempfile
>>> with Experiment(tempfile.mkdtemp(), tensorboard=False) as experiment:
...     experiment.log_metrics({"val/accuracy": 0.5}, step=10, epoch=0, split="val")
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from cadence.errors import CadenceError
from cadence.logs import add_file_logging, get_logger, remove_handler


def unique_directory(root: str | Path, name: str) -> Path:
    """``root/name/YYYYmmdd-HHMMSS`` (with a suffix if two runs start in the same second)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = Path(root) / name / stamp
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = Path(root) / name / f"{stamp}-{suffix}"
    return candidate


def write_json_atomic(path: Path, content: Any) -> None:
    """Write JSON to a temporary file, then rename: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class Experiment:
    """Owns an experiment folder and its writers; ``stop()`` closes them all."""

    def __init__(self, directory: str | Path, tensorboard: bool = True):
        self.directory = Path(directory).resolve()
        try:
            self.checkpoints_directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CadenceError(f"{self.directory}: cannot create the experiment folder ({error.strerror}); choose another --exp-dir") from error
        self.started = time.time()
        self.logger = get_logger()
        self._log_handler = add_file_logging(self.directory / "train.log")
        self._metrics_file = open(self.directory / "metrics.jsonl", "a", encoding="utf-8")
        self._tensorboard = None
        if tensorboard:
            # Imported here: the TensorBoard writer costs ~1 s to import, only paid when used.
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(self.directory / "tensorboard"))
        self.stopped = False

    @property
    def checkpoints_directory(self) -> Path:
        return self.directory / "checkpoints"

    def log_metrics(self, values: dict[str, float], step: int, epoch: int, split: str) -> None:
        """Append one line to metrics.jsonl and one TensorBoard scalar per value."""
        if self.stopped:
            return
        record = {"step": step, "epoch": epoch, "split": split, "time": round(time.time() - self.started, 3)}
        record.update({name: _json_number(value) for name, value in values.items()})
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(name, value, global_step=step)

    def write_json(self, name: str, content: Any) -> Path:
        path = self.directory / name
        write_json_atomic(path, content)
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def stop(self) -> None:
        """Flush and close every writer; safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        if self._tensorboard is not None:
            self._tensorboard.close()
        self._metrics_file.close()
        remove_handler(self._log_handler)

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _json_number(value: float) -> float | str:
    """JSON has no NaN or infinity; write them as strings rather than invalid JSON."""
    value = float(value)
    return value if math.isfinite(value) else str(value)
