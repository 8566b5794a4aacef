"""Shared fixtures for the corpora tests: the real FSDD corpus (skipped where it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fsdd_root() -> Path:
    root = Path(os.environ.get("CADENCE_FSDD_ROOT") or Path(__file__).resolve().parents[3] / "shared" / "data" / "fsdd")
    if not (root / "recordings" / "0_george_0.wav").is_file():
        pytest.skip(f"FSDD not found at {root}; set CADENCE_FSDD_ROOT")
    return root

