"""A check shared by the model tests: a new layer that is off by default changes nothing, not
even the random numbers drawn (so recipes train bit-identically to before it existed).

Imported by the test files as ``from random_draws import same_forward_and_draws`` (pytest puts
the test file's folder on the import path).
"""

from __future__ import annotations

import torch


def same_forward_and_draws(run_model, run_reference, seed: int = 5) -> bool:
    """Both in one random state: equal outputs and the same random numbers drawn."""
    torch.manual_seed(seed)
    output = run_model()
    after_model = torch.get_rng_state()
    torch.manual_seed(seed)
    return torch.equal(output, run_reference()) and torch.equal(after_model, torch.get_rng_state())
