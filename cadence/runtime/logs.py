"""Console and file logging for the ``cadence`` logger, and the progress bar.

Handlers are attached once, however many trainers or experiments a process builds, so
no line is ever printed twice. On the console, warnings and errors say so before their
message (``12:00:00 WARNING: skipping damaged checkpoint ...``); other lines are
``12:00:00 INFO message``.

A ``train.log`` write that fails (disk full) does not raise into the code that logged, nor
print logging's own traceback: the handler keeps the failure (:attr:`LogFile.failure`, a
:class:`~cadence.errors.StorageError`) and writes the file no more, the console still shows
every line, and :class:`~cadence.experiment.Experiment` raises the failure at its next write
or when it stops.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Iterable, TypeVar

from tqdm import tqdm

from cadence.errors import StorageError
from cadence.runtime.files import open_for_append, storage_error, writing

LOGGER_NAME = "cadence"
FORMAT = "%(asctime)s %(levelname)s %(message)s"
WARNING_FORMAT = "%(asctime)s %(levelname)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
Item = TypeVar("Item")


class ConsoleFormatter(logging.Formatter):
    """:data:`FORMAT` for information, :data:`WARNING_FORMAT` for warnings and errors.

    >>> record = logging.LogRecord("cadence", logging.WARNING, __file__, 1, "disk %s", ("full",), None)
    >>> ConsoleFormatter().format(record).split(" ", 1)[1]
    'WARNING: disk full'
    """

    def __init__(self) -> None:
        super().__init__(FORMAT, DATE_FORMAT)
        self._warning = logging.Formatter(WARNING_FORMAT, DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return self._warning.format(record) if record.levelno >= logging.WARNING else super().format(record)


class LogFile(logging.FileHandler):
    """A log file whose first failed write is kept in :attr:`failure` instead of printed.

    After it, nothing more is written to the file (lines would go missing in the middle);
    whoever owns the file raises the failure (see the module docstring).
    """

    failure: StorageError | None = None

    def _open(self):
        return open_for_append(self.baseFilename)  # never through a symbolic link

    def emit(self, record: logging.LogRecord) -> None:
        if self.failure is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # called inside emit's except block
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            self.failure = self.failure or storage_error(self.baseFilename, error)
            return
        super().handleError(record)

    def close(self) -> None:
        try:
            super().close()  # flushes what is buffered: fails again on a full disk
        except OSError as error:
            self.failure = self.failure or storage_error(self.baseFilename, error)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup_console_logging(level: int = logging.INFO) -> logging.Logger:
    """Show ``level`` and above of the ``cadence`` logger on stderr (one console handler per process).

    The logger's level is lowered to ``level`` when needed, never raised, so ``train.log``
    keeps what it records.
    """
    logger = get_logger()
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    console = next((handler for handler in logger.handlers if getattr(handler, "cadence_console", False)), None)
    if console is None:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(ConsoleFormatter())
        console.cadence_console = True  # type: ignore[attr-defined]
        logger.addHandler(console)
        # Our handler prints already; propagating too would print each line again
        # whenever the application configured the root logger.
        logger.propagate = False
    console.setLevel(level)
    return logger


def add_file_logging(path: Path) -> logging.Handler:
    """Mirror the ``cadence`` logger into ``path`` (appending); returns the :class:`LogFile` to
    remove later. A file that cannot be opened raises :class:`StorageError`."""
    logger = get_logger()
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path.resolve():
            return handler
    with writing(path):
        handler = LogFile(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return handler


def remove_handler(handler: logging.Handler) -> None:
    get_logger().removeHandler(handler)
    handler.close()


def progress(items: Iterable[Item], enabled: bool, description: str, total: int | None = None) -> Iterable[Item]:
    """A tqdm bar over ``items``; silent when disabled or when stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        return items
    return tqdm(items, desc=description, total=total, leave=False, dynamic_ncols=True)


class DownloadProgress:
    """How far a download got: a tqdm bar counting bytes on a terminal, and a log line every
    tenth of the file (every 10 MB when its size is unknown) for a log file or a pipe.

    ``with DownloadProgress("downloading x", total) as download: download.add(len(block))``;
    :attr:`received` counts the bytes, ``initial`` included (a resumed download).
    """

    def __init__(self, description: str, total: int | None, initial: int = 0) -> None:
        self.total, self.received = total or None, initial
        self._next_report = 0.1 if self.total is None else initial / self.total + 0.1
        self._bar = (tqdm(desc=description, total=self.total, initial=initial, unit="B", unit_scale=True,
                          unit_divisor=1024, leave=False, dynamic_ncols=True)
                     if sys.stderr.isatty() else None)

    def add(self, count: int) -> None:
        before, self.received = self.received, self.received + count
        if self._bar is not None:
            self._bar.update(count)
        if self.total and self.received / self.total >= self._next_report:
            get_logger().info("downloaded %.1f of %.1f MB (%d%%)", self.received / 1e6, self.total / 1e6,
                              100 * self.received // self.total)
            self._next_report = self.received / self.total + 0.1
        elif not self.total and self.received // (10 << 20) != before // (10 << 20):
            get_logger().info("downloaded %.1f MB", self.received / 1e6)

    def __enter__(self) -> DownloadProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.close()
