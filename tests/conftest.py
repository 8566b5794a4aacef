"""Shared fixtures: tiny synthetic data, the FSDD location, a quiet logger."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

REPOSITORY = Path(__file__).resolve().parents[1]
FSDD_ROOT = REPOSITORY.parent / "shared" / "data" / "fsdd"


@pytest.fixture(scope="session")
def fsdd_root() -> Path:
    """The real FSDD corpus beside the checkout (or $CADENCE_FSDD_ROOT); skipped where absent."""
    root = Path(os.environ.get("CADENCE_FSDD_ROOT") or FSDD_ROOT)
    if not (root / "recordings" / "0_george_0.wav").is_file():
        pytest.skip(f"FSDD not found at {root}; set CADENCE_FSDD_ROOT")
    return root


def separable_data(samples: int = 96, features: int = 6, classes: int = 3, seed: int = 0) -> TensorDataset:
    """Gaussian blobs a linear model separates, so a few epochs learn them."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=generator) * 3  # first: the same for any size
    targets = torch.randint(0, classes, (samples,), generator=generator)
    inputs = centers[targets] + torch.randn(samples, features, generator=generator) * 0.5
    return TensorDataset(inputs, targets)


@pytest.fixture
def loaders():
    train = DataLoader(separable_data(seed=0), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    valid = DataLoader(separable_data(samples=48, seed=0), batch_size=24)  # same centers, other points
    return train, valid


@pytest.fixture(autouse=True)
def _reset_cadence_logger():
    yield
    logger = logging.getLogger("cadence")
    # Every test starts without handlers: a console handler made in an earlier test would
    # still write to that test's (captured) stderr.
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
