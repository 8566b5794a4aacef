"""Whether a run is running, finished, stopped or crashed: ``status.json`` in its folder, and a lock.

The :class:`~cadence.experiment.Experiment` writes the status (the Trainer tells it how a fit
ended); ``cadence ls`` and ``cadence compare`` read it (:func:`read_status`):

- ``running``: written when ``fit`` starts (:func:`mark_running`), with the process's id, host
  and start time. The process also holds an exclusive ``flock`` on ``status.lock`` until it
  ends, however it ends: the kernel drops the lock of a killed process.
- ``finished``: written with ``results.json``.
- ``stopped``: the run ended on a stop request (SIGTERM, SIGINT, ``Experiment.stop()``) after
  saving a checkpoint; ``cadence resume`` continues it.
- ``crashed``: the run ended on an exception, whose first line is kept. A process killed
  outright (SIGKILL, out of memory, power lost) writes nothing; its folder still says
  ``running`` but nobody holds the lock, so :func:`read_status` reads it as ``crashed``.

On a host without ``flock`` (or a folder on another host), a ``running`` run cannot be told from
a crashed one: it reads as ``running``.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> lock = mark_running(folder)
>>> read_status(folder)["status"]
'running'
>>> release(lock)                      # as if the process had been killed
>>> read_status(folder)["status"], read_status(folder)["note"]
('crashed', 'the process ended without a word (killed?)')
>>> mark_ended(folder, "finished")
>>> read_status(folder)["status"]
'finished'
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path
from typing import IO, Any, Literal

from cadence.errors import TrainingInterrupted
from cadence.runtime.files import read_json_object, write_json_atomic

try:
    import fcntl
except ImportError:  # not on this platform: no lock, see the module's docstring
    fcntl = None

__all__ = ["STATUS_FILE", "ending_of", "mark_ended", "mark_running", "read_status", "release"]

STATUS_FILE = "status.json"
LOCK_FILE = "status.lock"
Ending = Literal["finished", "stopped", "crashed"]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def mark_running(directory: Path) -> IO[bytes] | None:
    """Write ``running`` and take the folder's lock; the open lock file is returned, to keep
    (and :func:`release` when the run ends). None where there is no flock, or when another
    process holds the lock (two processes writing one folder: the status says the newer one)."""
    directory = Path(directory)
    write_json_atomic(directory / STATUS_FILE, {"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
                                                "started": _now()})
    if fcntl is None:
        return None
    handle = open(directory / LOCK_FILE, "ab")  # never truncated: it holds nothing but the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def release(lock: IO[bytes] | None) -> None:
    """Drop the lock (closing the file releases it)."""
    if lock is not None:
        lock.close()


def ending_of(error: BaseException | None) -> tuple[Ending, str | None]:
    """The status a run ends with, and what to say of it: ``finished`` without an error,
    ``stopped`` on a stop request, ``crashed`` with the error's first line otherwise."""
    if error is None:
        return "finished", None
    if isinstance(error, TrainingInterrupted):
        return "stopped", str(error).splitlines()[0] if str(error) else None
    text = str(error).strip().splitlines()
    return "crashed", f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def mark_ended(directory: Path, status: Ending, note: str | None = None) -> None:
    """Write how the run ended, keeping when and where it started."""
    path = Path(directory) / STATUS_FILE
    started = read_json_object(path)
    record = {key: started[key] for key in ("pid", "host", "started") if key in started}
    write_json_atomic(path, {**record, "status": status, "ended": _now(), **({"note": note} if note else {})})


def read_status(directory: Path) -> dict[str, Any]:
    """The folder's status record, with ``status`` as it is now: a ``running`` record whose lock
    nobody holds (on this host) is ``crashed``. A folder without one (a run made before cadence
    kept a status) is ``unknown``, or ``finished`` when it has readable results."""
    directory = Path(directory)
    record = read_json_object(directory / STATUS_FILE)
    if not record:
        return {"status": "finished" if read_json_object(directory / "results.json") else "unknown"}
    if record.get("status") == "running" and record.get("host") == socket.gethostname() and not _lock_held(directory):
        return {**record, "status": "crashed", "note": "the process ended without a word (killed?)"}
    return record


def _lock_held(directory: Path) -> bool:
    """Whether a live process holds the folder's lock (True when it cannot be told)."""
    if fcntl is None:
        return True
    try:
        handle = open(directory / LOCK_FILE, "rb")
    except OSError:
        return False  # never locked here
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
