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
    """Requests for a clean stop from outside the loop: SIGTERM and SIGINT while
    :meth:`watching` (main thread only), and :meth:`request` (``Experiment.stop()`` calls it).

    A request lasts one ``fit`` (:meth:`reset`) and is never saved in a checkpoint: a run
    resumed after a SIGTERM trains on.
    """

    def __init__(self) -> None:
        self.reason: str | None = None  # "SIGTERM", "SIGINT", "Experiment.stop()"
        self.signal_number: int | None = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def reset(self) -> None:
        self.reason, self.signal_number = None, None

    def _handle(self, signal_number: int, frame) -> None:
        if self.signal_number is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.signal_number = signal_number
        self.reason = signal.Signals(signal_number).name
        logger.warning(
            "%s received: saving a checkpoint at the end of this step, then stopping (Ctrl-C again to stop at once)",
            self.reason,
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
