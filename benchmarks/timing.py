"""Timing a method where it runs, inside a real run: shared by the benchmarks that measure one
part of the loop against the rest of the same run (run as scripts, so imported as ``timing``)."""

from __future__ import annotations

import time


def timed(instance, name: str, spent: list[float]) -> None:
    """Replace ``instance.name`` by a wrapper that appends each call's seconds to ``spent``."""
    method = getattr(instance, name)

    def wrapper(*arguments, **options):
        started = time.perf_counter()
        try:
            return method(*arguments, **options)
        finally:
            spent.append(time.perf_counter() - started)

    setattr(instance, name, wrapper)
