"""Turning SIGTERM and SIGINT into a request for a clean stop while training runs."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

__all__ = ["StopRequests"]

logger = logging.getLogger("cadence")


class StopRequests:
    """Turns SIGTERM and SIGINT into a stop request while :meth:`watching` (main thread only)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def reset(self) -> None:
        self.signal_number = None

    def _handle(self, signal_number: int, frame) -> None:
        if self.requested and signal_number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.signal_number = signal_number
        logger.warning(
            "%s received: saving a checkpoint at the end of this step, then stopping (Ctrl-C again to stop at once)",
            signal.Signals(signal_number).name,
        )

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return
        previous = {number: signal.signal(number, self._handle) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
