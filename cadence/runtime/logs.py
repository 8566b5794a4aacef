"""Console and file logging for the ``cadence`` logger, and the progress bar.

Handlers are attached once, however many trainers or experiments a process builds, so
no line is ever printed twice.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Iterable, TypeVar

from tqdm import tqdm

LOGGER_NAME = "cadence"
FORMAT = "%(asctime)s %(levelname)s %(message)s"
DATE_FORMAT = "%H:%M:%S"
Item = TypeVar("Item")


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup_console_logging(level: int = logging.INFO) -> logging.Logger:
    """Attach the console handler to the ``cadence`` logger, once per process."""
    logger = get_logger()
    logger.setLevel(level)
    if not any(getattr(handler, "cadence_console", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        handler.cadence_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        # Our handler prints already; propagating too would print each line again
        # whenever the application configured the root logger.
        logger.propagate = False
    return logger


def add_file_logging(path: Path) -> logging.Handler:
    """Mirror the ``cadence`` logger into ``path`` (appending); returns the handler to remove later."""
    logger = get_logger()
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path.resolve():
            return handler
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
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
