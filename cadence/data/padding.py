"""Masks for padded batches: which positions along the last axis lie beyond each length.

Every feature and augmentation module works on padded batches ``[B, ..., time]`` with
``lengths [B]``; these two helpers are the one place that says what "padding" means
(positions ``>= length``), so every module agrees on it.

Example:

    >>> padding_mask(torch.tensor([3, 1]), 4)
    tensor([[False, False, False,  True],
            [False,  True,  True,  True]])
    >>> zero_padding(torch.ones(2, 4), torch.tensor([3, 1]))
    tensor([[1., 1., 1., 0.],
            [1., 0., 0., 0.]])
"""

from __future__ import annotations

import torch

__all__ = ["padding_mask", "zero_padding"]


def padding_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, size]`` bool, True at positions ``>= lengths[b]`` (the padding)."""
    positions = torch.arange(size, device=lengths.device)
    return positions[None, :] >= lengths[:, None]


def zero_padding(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``values [B, ..., T]`` with every position ``t >= lengths[b]`` of the last axis set to 0."""
    mask = padding_mask(lengths.to(values.device), values.shape[-1])  # [B, T]
    mask = mask.view(mask.shape[0], *([1] * (values.dim() - 2)), mask.shape[1])  # [B, 1, ..., T]
    return values.masked_fill(mask, 0.0)
