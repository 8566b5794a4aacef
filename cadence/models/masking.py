"""Masks and batch norms for padded batches, shared by the speech models.

A padded batch holds ``lengths [B]`` valid frames per utterance along its last (time) axis.
Every model keeps two promises with these helpers: frames beyond a length never change a
valid output, and training statistics never count padding. So an utterance gets the same
outputs alone or inside any padded batch (in eval mode).

    >>> valid_frames(torch.tensor([3, 1]), 4)
    tensor([[[1., 1., 1., 0.]],
    <BLANKLINE>
            [[1., 0., 0., 0.]]])
    >>> valid_positions(torch.tensor([3, 1]), 4)
    tensor([[ True,  True,  True, False],
            [ True, False, False, False]])
"""

from __future__ import annotations

import torch
from torch import nn

from cadence.errors import ConfigError

__all__ = [
    "MaskedBatchNorm1d", "MaskedBatchNorm2d", "check_feature_shape", "masked_batch_norm", "valid_frames", "valid_positions",
]


def check_feature_shape(features: torch.Tensor, n_mels: int, model: str) -> None:
    """Refuse inputs that are not ``[B, n_mels, T]`` in one line that says which setting to change:
    deep inside the model the mismatch would be a convolution's shape error."""
    if features.dim() == 3 and features.shape[1] == n_mels:
        return
    raise ConfigError(
        f"{model} with n_mels={n_mels} takes features [batch, {n_mels}, frames], but got a tensor of shape "
        f"{list(features.shape)}: give model.n_mels the features' n_mels, and a features section (e.g. "
        "log_mel) when the data gives waveforms"
    )


def valid_positions(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """[B] lengths -> [B, size] bool, True on valid positions (``< lengths[b]``)."""
    positions = torch.arange(size, device=lengths.device)
    return positions[None, :] < lengths[:, None]


def valid_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """[B] lengths -> [B, 1, T] float mask, 1 on valid frames."""
    return valid_positions(lengths, frames).unsqueeze(1).float()


def masked_batch_norm(norm: nn.modules.batchnorm._BatchNorm, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm of ``inputs [B, C, ..., T]`` over the positions where ``mask`` is 1.

    ``mask`` broadcasts against ``inputs`` with a channel axis of 1 (``[B, 1, T]``, ``[B, 1, 1, T]``).
    Updates ``norm``'s running statistics like ``nn.BatchNorm`` does (unbiased running variance).
    """
    reduced = [axis for axis in range(inputs.dim()) if axis != 1]
    shape = [1, -1] + [1] * (inputs.dim() - 2)  # broadcasts a [C] vector over [B, C, ..., T]
    count = mask.expand(inputs.shape[0], 1, *inputs.shape[2:]).sum()
    mean = (inputs * mask).sum(reduced) / count  # [C]
    variance = (((inputs - mean.view(shape)) * mask) ** 2).sum(reduced) / count  # [C]
    with torch.no_grad():
        norm.running_mean.lerp_(mean, norm.momentum)
        norm.running_var.lerp_(variance * count / (count - 1).clamp(min=1), norm.momentum)
    normalized = (inputs - mean.view(shape)) * torch.rsqrt(variance.view(shape) + norm.eps)
    if not norm.affine:
        return normalized
    return normalized * norm.weight.view(shape) + norm.bias.view(shape)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over channels whose training statistics ignore padded frames.

    Plain BatchNorm would count padding zeros, so the statistics (and the model) would
    depend on how utterances were grouped into batches. Eval mode uses running statistics.

    >>> norm = MaskedBatchNorm1d(3)
    >>> norm(torch.randn(2, 3, 5), valid_frames(torch.tensor([5, 2]), 5)).shape
    torch.Size([2, 3, 5])
    """

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [B, C, T], [B, 1, T]
        if not self.training:
            return super().forward(inputs)
        return masked_batch_norm(self, inputs, mask)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """:class:`MaskedBatchNorm1d` for ``[B, C, F, T]`` maps with a ``[B, 1, 1, T]`` mask.

    >>> norm = MaskedBatchNorm2d(3)
    >>> norm(torch.randn(2, 3, 4, 5), valid_frames(torch.tensor([5, 2]), 5)[:, :, None]).shape
    torch.Size([2, 3, 4, 5])
    """

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [B, C, F, T], [B, 1, 1, T]
        if not self.training:
            return super().forward(inputs)
        return masked_batch_norm(self, inputs, mask)
