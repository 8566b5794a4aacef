"""Shared fixtures for the data tests: the real FSDD corpus (skipped where it is absent)."""

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


@pytest.fixture(scope="session")
def fsdd_files(fsdd_root: Path) -> list[Path]:
    """A few real recordings of different lengths, speakers and digits."""
    names = ["0_george_0", "3_jackson_12", "7_lucas_4", "9_yweweler_30", "5_nicolas_7", "2_theo_41"]
    return [fsdd_root / "recordings" / f"{name}.wav" for name in names]
