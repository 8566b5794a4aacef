"""A compact 1-D CNN utterance classifier over log-mel features (digits, speakers, ...).

Shapes: features [B, n_mels, T] and lengths [B] (valid frames) in, logits [B, classes] out.
Every statistic (input normalization, batch norm in training, pooling) uses valid frames
only, so an utterance gets the same logits alone or inside a padded batch (in eval mode).

Dropout: ``dropout`` before the linear head; ``conv_dropout`` after every convolution block
(0, i.e. none, by default). Both are ``nn.Dropout`` modules, so a ``dropout`` schedule sets them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cadence.bounds import OddInt, PositiveInt, ProperFraction
from cadence.models.masking import MaskedBatchNorm1d, check_feature_shape, valid_frames
from cadence.registry import MODELS


@MODELS.register("cnn_classifier")
class CNNClassifier(nn.Module):
    """Conv1d blocks over time (channels = mel bands), then mean and std pooling, then a linear head.

    >>> model = CNNClassifier(num_classes=10)
    >>> model(torch.randn(2, 40, 50), torch.tensor([50, 30])).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: PositiveInt,
        n_mels: PositiveInt = 40,
        channels: PositiveInt = 64,
        layers: PositiveInt = 4,
        kernel_size: OddInt = 5,
        dropout: ProperFraction = 0.1,
        conv_dropout: ProperFraction = 0.0,
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size must be odd (so frames stay aligned), got {kernel_size}")
        self.n_mels = n_mels
        self.convolutions = nn.ModuleList()
        self.norms = nn.ModuleList()
        inputs = n_mels
        for _ in range(layers):
            # No bias: the batch norm right after has its own.
            self.convolutions.append(nn.Conv1d(inputs, channels, kernel_size, padding=kernel_size // 2, bias=False))
            self.norms.append(MaskedBatchNorm1d(channels))
            inputs = channels
        self.conv_dropout = nn.Dropout(conv_dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        check_feature_shape(features, self.n_mels, "cnn_classifier")
        batch, bands, frames = features.shape  # [B, n_mels, T]
        if lengths is None:
            lengths = torch.full((batch,), frames, dtype=torch.long, device=features.device)
        mask = valid_frames(lengths, frames)  # [B, 1, T]
        count = lengths.to(features.dtype)[:, None, None]  # [B, 1, 1]
        # One mean and variance per utterance over all its valid values: removes level
        # differences between recordings without whitening each band.
        mean = (features * mask).sum((1, 2), keepdim=True) / (count * bands)
        variance = (((features - mean) * mask) ** 2).sum((1, 2), keepdim=True) / (count * bands)
        hidden = (features - mean) * torch.rsqrt(variance + 1e-5) * mask  # [B, n_mels, T]
        for convolution, norm in zip(self.convolutions, self.norms):
            hidden = self.conv_dropout(F.relu(norm(convolution(hidden), mask)) * mask)  # [B, C, T], padding kept at 0
        pooled_mean = hidden.sum(2) / count[:, :, 0]  # [B, C]
        pooled_variance = (((hidden - pooled_mean[:, :, None]) * mask) ** 2).sum(2) / count[:, :, 0]
        pooled = torch.cat([pooled_mean, torch.sqrt(pooled_variance + 1e-5)], dim=1)  # [B, 2C]
        return self.head(self.dropout(pooled))  # [B, classes]
