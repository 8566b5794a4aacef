"""Random draws for augmentations and pairings that a resumed run repeats exactly.

Every random choice made inside a training step (SpecAugment's masks, a speed factor, a
negative pair) takes its numbers from here: uniform float64 draws from torch's global CPU
generator (which checkpoints save and restore on every rank) or from an explicit
``generator``, whatever device the data is on. So ``torch.manual_seed`` alone reproduces an
augmentation on CPU and on an accelerator, and a caller that asks for a number of draws that
depends only on the batch size (never on lengths or values) keeps the generator's position
independent of the data.

>>> generator = torch.Generator().manual_seed(0)
>>> uniform_draws((2, 3), generator).shape, uniform_draws((2,), generator).dtype
(torch.Size([2, 3]), torch.float64)
"""

from __future__ import annotations

import torch

__all__ = ["uniform_draws"]


def uniform_draws(
    shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Uniform [0, 1) float64 draws, made where the RNG lives, returned on ``device``."""
    rng_device = generator.device if generator is not None else torch.device("cpu")
    draws = torch.rand(shape, generator=generator, device=rng_device, dtype=torch.float64)
    return draws if device is None else draws.to(device, non_blocking=True)
