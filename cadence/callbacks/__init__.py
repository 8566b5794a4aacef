"""Callbacks: small objects that observe or adjust the training loop."""

from cadence.callbacks.base import HOOKS, Callback
from cadence.callbacks.early_stopping import EarlyStopping
from cadence.callbacks.weight_noise import WeightNoise

__all__ = ["HOOKS", "Callback", "EarlyStopping", "WeightNoise"]
