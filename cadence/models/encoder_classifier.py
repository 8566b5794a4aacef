"""A downstream classifier on top of an encoder (a pretrained PASE+ encoder, or any other).

    inputs, lengths ─► encoder ─► frames [B, D, T] ─► mean and std over each utterance's
    valid frames [B, 2 D] ─► MLP (``hidden`` units, PReLU, dropout) ─► logits [B, classes]

``encoder`` is a registered model's ``{name: ..., settings}`` that maps ``(inputs, lengths)``
to ``(frames [B, D, T], frame_lengths)`` and has an ``output_size`` attribute
(``pase_encoder``). Its weights come from a pretraining run through the recipe's ``preload``
(``prefix: "model.encoder.", source_prefix: "model."``).

``feature_frames`` is the encoder that learns nothing: the features themselves (log-mel frames)
as the frames, so the same pooling and head can be compared on plain features.

``freeze_encoder: true`` keeps the pretrained encoder as it is: its parameters get no gradient,
and it stays in evaluation mode (its batch norms keep the pretraining statistics, which a
recipe's ``freeze:`` patterns alone would let training mode update) and runs without
building a graph. ``false`` fine-tunes it (give it its own learning rate with
``optimizer.groups`` on ``model.encoder.*``). ``pretrained_norms: true`` fine-tunes the weights
but keeps the encoder's batch norms in evaluation mode: they normalize with the pretraining
statistics and never update them, where batches of a few labelled utterances would give noisy
ones. (Measured on FSDD at 1 utterance a class, it was no better than plain fine-tuning:
BENCHMARKS.md, issue 14.)

>>> import cadence.models.pase  # registers pase_encoder
>>> model = EncoderClassifier(num_classes=6, encoder={"name": "pase_encoder", "sample_rate": 8000, "sinc_filters": 4,
...                           "channels": [4] * 7, "rnn_hidden": 4, "output_size": 8}, hidden=16, freeze_encoder=True)
>>> model(torch.randn(2, 4000), torch.tensor([4000, 2000])).shape
torch.Size([2, 6])
>>> model.train().encoder.training, any(parameter.requires_grad for parameter in model.encoder.parameters())
(False, False)
>>> tuned = EncoderClassifier(num_classes=6, encoder={"name": "pase_encoder", "sample_rate": 8000, "sinc_filters": 4,
...                           "channels": [4] * 7, "rnn_hidden": 4, "output_size": 8}, pretrained_norms=True).train()
>>> tuned.encoder.training, tuned.encoder.norms[0].training, tuned.encoder.sinc.low_hz.requires_grad
(True, False, True)
"""

from __future__ import annotations

import torch
from torch import nn

from cadence.bounds import PositiveInt, ProperFraction
from cadence.errors import ConfigError
from cadence.models.masking import valid_frames
from cadence.registry import MODELS, component_spec, spec_settings

__all__ = ["EncoderClassifier", "FeatureFrames", "mean_and_std_pooling"]


@MODELS.register("encoder_classifier")
class EncoderClassifier(nn.Module):
    """An encoder, mean and standard deviation pooling over valid frames, an MLP head."""

    def __init__(
        self,
        num_classes: PositiveInt,
        encoder: component_spec(MODELS),
        hidden: PositiveInt = 256,
        dropout: ProperFraction = 0.1,
        freeze_encoder: bool = False,
        pretrained_norms: bool = False,
    ):
        super().__init__()
        self.encoder = MODELS.get(encoder["name"], "model.encoder.name")(**spec_settings(encoder))
        size = getattr(self.encoder, "output_size", None)
        if not isinstance(size, int):
            raise ConfigError(f"model.encoder: {encoder['name']} has no output_size attribute (the size of its frames); "
                              "encoder_classifier needs an encoder such as pase_encoder")
        if freeze_encoder and pretrained_norms:
            raise ConfigError("model.pretrained_norms is for fine-tuning (freeze_encoder: false); a frozen encoder "
                              "keeps its pretrained batch-norm statistics already: drop pretrained_norms")
        self.freeze_encoder = freeze_encoder
        self.pretrained_norms = pretrained_norms
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(2 * size, hidden), nn.PReLU(hidden), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def train(self, mode: bool = True) -> EncoderClassifier:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # its batch norms keep the statistics it was pretrained with
        elif self.pretrained_norms:
            for module in self.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            frames, frame_lengths = self.encoder(inputs, lengths)  # [B, D, T], [B]
        return self.head(mean_and_std_pooling(frames, frame_lengths))  # [B, classes]


def mean_and_std_pooling(frames: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """``[B, 2 D]``: the mean and standard deviation of each utterance's valid frames ``[B, D, T]``
    (``benchmarks/ssl_probe.py`` pools with it too, so the probe sees what the head sees)."""
    mask = valid_frames(frame_lengths, frames.shape[-1]).to(frames.dtype)  # [B, 1, T]
    count = mask.sum(-1).clamp(min=1)  # [B, 1]: an utterance too short for a frame pools to zeros
    mean = (frames * mask).sum(-1) / count  # [B, D]
    variance = (((frames - mean[..., None]) * mask) ** 2).sum(-1) / count
    return torch.cat([mean, torch.sqrt(variance + 1e-5)], dim=1)


@MODELS.register("feature_frames")
class FeatureFrames(nn.Module):
    """The features as the frames (``[B, size, T]`` in and out): no encoder, for comparisons."""

    def __init__(self, size: PositiveInt):
        super().__init__()
        self.output_size = size

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if features.dim() != 3 or features.shape[1] != self.output_size:
            raise ConfigError(f"feature_frames with size={self.output_size} takes features [batch, {self.output_size}, frames], "
                              f"got shape {list(features.shape)}: give model.encoder.size the features' size (n_mels)")
        return features, lengths
