"""Fixtures for the data tests: a few real FSDD recordings (fsdd_root and the damaged audio
files come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fsdd_files(fsdd_root: Path) -> list[Path]:
    """A few real recordings of different lengths, speakers and digits."""
    names = ["0_george_0", "3_jackson_12", "7_lucas_4", "9_yweweler_30", "5_nicolas_7", "2_theo_41"]
    return [fsdd_root / "recordings" / f"{name}.wav" for name in names]
