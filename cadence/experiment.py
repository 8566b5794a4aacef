"""One run's folder: logs, metrics, TensorBoard curves, config, provenance, results.

Layout::

    EXP_DIR/
      config.yaml  config.sha256  provenance.json  code/     (record_run, at the start of fit)
      train.log  metrics.jsonl  tensorboard/  checkpoints/  results.json (write_results, at its end)
      status.json  status.lock                              (running, finished, stopped or crashed:
                                                             :mod:`cadence.run_status`)

What the run records is decided in :mod:`cadence.run_record`, the same way for a run built
from a recipe and one built in Python. JSON is strict (a non-finite value is ``null``, see
:mod:`cadence.runtime.files`). A write that fails (disk full, read-only) raises
:class:`~cadence.errors.StorageError` naming the file: at once for ``metrics.jsonl``, TensorBoard
and the JSON and YAML files; for ``train.log``, whose writes happen inside logging calls, at
the next :meth:`Experiment.log_metrics` or at :meth:`Experiment.stop`.

>>> import tempfile
>>> with Experiment(tempfile.mkdtemp(), tensorboard=False) as experiment:
...     experiment.log_metrics({"val/accuracy": 0.5}, step=10, epoch=0, split="val")
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Sequence

from cadence.errors import StorageError
from cadence.loggers.base import MetricLogger
from cadence.runtime.files import (
    config_hash, open_for_append, refuse_symlink, storage_error, strict_json, to_yaml, write_bytes_atomic,
    write_json_atomic, writing,
)
from cadence.runtime.logs import add_file_logging, get_logger, remove_handler
from cadence.runtime.provenance import collect_provenance, snapshot_code
from cadence.run_status import ending_of, mark_ended, mark_running, release
from cadence.runtime.signals import StopRequests


def unique_directory(root: str | Path, name: str) -> Path:
    """``root/name/YYYYmmdd-HHMMSS`` (with a suffix if two runs start in the same second)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = Path(root) / name / stamp
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = Path(root) / name / f"{stamp}-{suffix}"
    return candidate


class Experiment:
    """Owns an experiment folder and its writers; ``stop()`` closes them all.

    ``entry_point``: the file the run started from, copied into ``code/`` (a command passes
    its recipe; by default, the calling script). ``notes``: what a command adds to the run's
    provenance record (``cadence resume`` its overrides and the changes they make).
    ``loggers``: trackers that get every logged value too (:mod:`cadence.loggers`: CSV, MLflow,
    a user's own), driven through the hooks of :class:`~cadence.loggers.base.MetricLogger`.
    """

    def __init__(
        self, directory: str | Path, tensorboard: bool = True, entry_point: str | Path | None = None,
        notes: dict[str, Any] | None = None, loggers: Sequence[MetricLogger] = (),
    ):
        self.directory = Path(directory).resolve()
        self.entry_point = Path(entry_point) if entry_point is not None else None
        self.notes = dict(notes or {})
        # The first failed write, once raised: stop() closes the writers without raising it again.
        self._raised: StorageError | None = None
        with writing(self.checkpoints_directory):
            self.checkpoints_directory.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.logger = get_logger()
        self._log_handler = add_file_logging(self.directory / "train.log")
        self._metrics_path = self.directory / "metrics.jsonl"
        try:
            refuse_symlink(self._metrics_path)  # cut and appended to: never through a link
            _drop_partial_last_line(self._metrics_path)  # a line cut by a crash would merge with the next
            with writing(self._metrics_path):
                self._metrics_file = open_for_append(self._metrics_path)
        except BaseException:
            remove_handler(self._log_handler)
            raise
        # Lines in metrics.jsonl; a checkpoint records it, so a resumed run can drop later lines.
        self.metrics_lines = _count_lines(self._metrics_path)
        self._tensorboard = None
        self.tensorboard_enabled = tensorboard
        if tensorboard:
            try:
                self._tensorboard = _summary_writer(self.tensorboard_directory)
            except BaseException:
                self._metrics_file.close()
                remove_handler(self._log_handler)
                raise
        self.loggers = list(loggers)
        try:
            for each in self.loggers:
                each.open(self.directory)
        except BaseException:
            if self._tensorboard is not None:
                self._tensorboard.close()
            self._metrics_file.close()
            remove_handler(self._log_handler)
            raise
        self.stopped = False
        # The status lock, held from the start of a fit to stop() (None: no fit started here).
        self._status_lock = None
        self._marked_running = False
        # The running Trainer's stop requests, attached while its fit runs: stop() then asks
        # for a clean stop instead of closing the writers under it.
        self.stop_requests: StopRequests | None = None

    @property
    def checkpoints_directory(self) -> Path:
        return self.directory / "checkpoints"

    @property
    def tensorboard_directory(self) -> Path:
        return self.directory / "tensorboard"

    def log_metrics(self, values: dict[str, float], step: int, epoch: int, split: str) -> None:
        """Append one line to metrics.jsonl (a non-finite value as ``null``) and one TensorBoard
        scalar per value (TensorBoard keeps nan and inf)."""
        if self.stopped:
            return
        self._raise(self._log_handler_failure())
        record = {"step": step, "epoch": epoch, "split": split, "time": round(time.time() - self.started, 3)}
        record.update({name: float(value) for name, value in values.items()})
        with self._writing(self._metrics_path):
            self._metrics_file.write(strict_json(record) + "\n")
            self._metrics_file.flush()
        self.metrics_lines += 1
        if self._tensorboard is not None:
            with self._writing(self.tensorboard_directory):
                for name, value in values.items():
                    self._tensorboard.add_scalar(name, value, global_step=step)
        for each in self.loggers:
            each.log_metrics(values, step=step, epoch=epoch, split=split)

    def log_text(self, tag: str, text: str, step: int) -> None:
        """A text sample in TensorBoard (Markdown is rendered), e.g. hypotheses against references."""
        if self.stopped:
            return
        if self._tensorboard is not None:
            with self._writing(self.tensorboard_directory):
                self._tensorboard.add_text(tag, text, global_step=step)
        for each in self.loggers:
            each.log_text(tag, text, step)

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """:func:`writing`, remembering the failure so that :meth:`stop` does not raise it again."""
        try:
            yield
        except OSError as error:
            self._raise(storage_error(path, error), cause=error)

    def _raise(self, failure: StorageError | None, cause: BaseException | None = None) -> None:
        if failure is not None:
            self._raised = self._raised or failure
            raise failure from cause

    def _log_handler_failure(self) -> StorageError | None:
        return getattr(self._log_handler, "failure", None)

    def record_run(
        self, config: dict[str, Any] | None, seed: int | None, data_manifests: dict[str, Path],
        modules: dict[str, ModuleType], resumed_from: Path | None = None,
    ) -> None:
        """Write what makes the run reproducible: ``config.yaml`` and ``config.sha256`` (when the
        run has a config), ``provenance.json``, and ``code/`` (the entry point and the user's
        ``modules``, by the name a rebuild imports them by).

        A run continued from a checkpoint of this folder keeps its provenance and adds a resume
        entry to it; its config.yaml becomes the config it continues with.
        """
        digest = config_hash(config) if config is not None else None
        if config is not None:
            self.write_text("config.yaml", to_yaml(config))
            self.write_text("config.sha256", digest + "\n")
        path = self.directory / "provenance.json"
        continued = resumed_from is not None and Path(resumed_from).resolve().is_relative_to(self.directory)
        provenance = _read_provenance(path) if continued else None
        if provenance is not None:
            provenance.setdefault("resumes", []).append({
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "checkpoint": str(resumed_from), "command": sys.argv, **self.notes,
            })
        else:
            entry_point = self.entry_point or _calling_script()
            code = snapshot_code(self.directory / "code", entry_point, modules)
            # A folder continued without its provenance may be anybody's: its git is not run.
            provenance = {
                **collect_provenance(seed, digest, data_manifests, git_of_cwd=not continued),
                "entry_point": str(entry_point) if entry_point is not None else None, "code": code,
                "resumed_from": str(resumed_from) if resumed_from is not None else None, **self.notes,
            }
        self.write_json("provenance.json", provenance)
        for each in self.loggers:
            each.start(config, resumed=continued)
        release(self._status_lock)  # a second fit with this experiment: marked again
        self._status_lock = mark_running(self.directory)
        self._marked_running = True

    def record_ending(self, error: BaseException | None) -> None:
        """How the fit this process started ended (``status.json``), called by the Trainer:
        ``stopped`` on a stop request, ``crashed`` on any other error. A finished run is marked
        with its results; nothing is written when no fit started here."""
        if error is not None and self._marked_running and not self.stopped:
            status, note = ending_of(error)
            try:
                mark_ended(self.directory, status, note)
            except StorageError:
                pass  # the error on its way up says more; unmarked, the folder reads as crashed once the lock is dropped
            for each in self.loggers:
                try:
                    each.finish(status)
                except Exception as failure:  # the run's own error, on its way up, matters more
                    self.logger.warning("%s could not record that the run %s: %s", type(each).__name__, status, failure)

    def write_results(self, results: dict[str, Any]) -> Path:
        path = self.write_json("results.json", results)
        mark_ended(self.directory, "finished")
        for each in self.loggers:
            each.finish("finished")
        return path

    def write_json(self, name: str, content: Any) -> Path:
        path = self.directory / name
        write_json_atomic(path, content)
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.directory / name
        write_bytes_atomic(path, text.encode("utf-8"))
        return path

    def rewind(self, metrics_lines: int | None, global_step: int) -> None:
        """Continue after a checkpoint: keep the first ``metrics_lines`` lines of metrics.jsonl
        and have TensorBoard discard events after ``global_step`` (a resumed run logs them again)."""
        if metrics_lines is not None and metrics_lines < self.metrics_lines:
            with self._writing(self._metrics_path):
                self._metrics_file.close()
                with open(self._metrics_path, encoding="utf-8") as handle:
                    kept = [line for _, line in zip(range(metrics_lines), handle)]
            write_bytes_atomic(self._metrics_path, "".join(kept).encode("utf-8"))
            with self._writing(self._metrics_path):
                self._metrics_file = open_for_append(self._metrics_path)
            self.metrics_lines = metrics_lines
        if self._tensorboard is not None:
            with self._writing(self.tensorboard_directory):
                self._tensorboard.close()
            self._tensorboard = _summary_writer(self.tensorboard_directory, purge_step=global_step + 1)
        for each in self.loggers:
            each.rewind(global_step)

    def stop(self) -> None:
        """Flush and close every writer; safe to call twice.

        Called while a Trainer's ``fit`` runs (from a callback or another thread), it asks the
        Trainer to save a checkpoint and stop at the end of the current step; the writers are
        closed when ``fit`` has finished (and the caller stops the experiment again, as
        ``with Experiment(...)`` and ``cadence train`` do).
        """
        if self.stop_requests is not None:
            self.stop_requests.request("Experiment.stop()")
            return
        if self.stopped:
            return
        self.stopped = True
        # Every writer is closed, whatever fails; then the first failure not raised yet is.
        failures = []
        if self._tensorboard is not None:
            # flush() raises what the writer's thread met; close() would not.
            for close in (self._tensorboard.flush, self._tensorboard.close):
                try:
                    close()
                except OSError as error:
                    failures.append(storage_error(self.tensorboard_directory, error))
        try:
            self._metrics_file.close()  # flushes what a failed write left in the buffer
        except OSError as error:
            failures.append(storage_error(self._metrics_path, error))
        for each in self.loggers:
            try:
                each.close()
            except StorageError as error:
                failures.append(error)
            except OSError as error:
                failures.append(storage_error(self.directory, error))
            except Exception as error:  # a tracker's own failure (a store gone): the rest still close
                self.logger.warning("%s could not close: %s", type(each).__name__, error)
        remove_handler(self._log_handler)
        failures.append(self._log_handler_failure())
        release(self._status_lock)
        self._status_lock = None
        if self._raised is None:
            self._raise(next((failure for failure in failures if failure is not None), None))

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _calling_script() -> Path | None:
    """The script Python was started with (``python train.py``), if there is one."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(path) if path and Path(path).is_file() else None


def _drop_partial_last_line(path: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        write_bytes_atomic(path, data[: data.rfind(b"\n") + 1])


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def _summary_writer(directory: Path, purge_step: int | None = None):
    # Imported here: the TensorBoard writer costs ~1 s to import, only paid when used.
    from torch.utils.tensorboard import SummaryWriter

    _quiet_tensorboard_thread_errors()
    with writing(directory):
        return SummaryWriter(log_dir=str(directory), purge_step=purge_step)


_tensorboard_hook_installed = False


def _quiet_tensorboard_thread_errors() -> None:
    """Keep a failed write in TensorBoard's writer thread (disk full) from printing that
    thread's traceback. The writer raises the same error at its next call in the calling
    thread (``add_scalar``, ``flush``), where :class:`Experiment` makes it a StorageError."""
    global _tensorboard_hook_installed
    if _tensorboard_hook_installed:
        return
    previous = threading.excepthook

    def hook(arguments: threading.ExceptHookArgs) -> None:
        thread_module = type(arguments.thread).__module__ if arguments.thread is not None else ""
        if isinstance(arguments.exc_value, OSError) and thread_module.startswith("tensorboard."):
            return
        previous(arguments)

    threading.excepthook = hook
    _tensorboard_hook_installed = True


def _read_provenance(path: Path) -> dict[str, Any] | None:
    """A continued run's ``provenance.json``, or None when it is missing or not a JSON object
    (then it is written anew, and the damaged one's content is not trusted)."""
    try:
        provenance = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return provenance if isinstance(provenance, dict) else None
