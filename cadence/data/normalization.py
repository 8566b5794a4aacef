"""Mean and variance normalization of padded feature batches, per utterance or with data-set statistics.

Shapes: ``features [B, num_features, frames]``, ``lengths [B]`` valid frames (int64) ->
``(normalized [B, num_features, frames], lengths)``. Only valid frames (``< lengths``) enter
any statistic, and padding frames come out exactly 0, so the same utterance is normalized
the same way alone or in any batch.

Global statistics are computed once over a data set (see
:func:`cadence.data.pipeline.compute_statistics`), kept as persistent buffers so
checkpoints carry them, and can be saved as JSON beside an experiment.

Example:

    >>> normalization = FeatureNormalization("global")
    >>> features = torch.tensor([[[1.0, 3.0, 0.0]], [[5.0, 0.0, 0.0]]])  # [B=2, 1, 3], zero-padded
    >>> normalization.accumulate(features, torch.tensor([2, 1]))
    >>> normalization.finalize()
    >>> statistics = normalization.statistics_dict()
    >>> statistics["frames"], statistics["mean"], [round(std, 4) for std in statistics["std"]]
    (3, [3.0], [1.633])
    >>> normalization(features, torch.tensor([2, 1]))[0].round(decimals=3)
    tensor([[[-1.2250,  0.0000,  0.0000]],
    <BLANKLINE>
            [[ 1.2250,  0.0000,  0.0000]]])
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from cadence.bounds import PositiveFloat, PositiveInt
from cadence.data.padding import padding_mask, zero_padding
from cadence.errors import ConfigError
from cadence.registry import FEATURES

__all__ = ["FeatureNormalization"]

_MODES = ("utterance", "global")
_HOW_TO_COMPUTE = (
    "compute them once over the training data with cadence.data.pipeline.compute_statistics(pipeline, "
    "batches, device) (or call accumulate(features, lengths) on every batch, then finalize()), "
    "or restore them with load_statistics_dict() or load_state_dict()"
)


@FEATURES.register("normalize")
class FeatureNormalization(nn.Module):
    """``(features - mean) / sqrt(variance + eps)`` per feature, over valid frames only.

    - ``mode="utterance"``: mean and variance of each feature over each utterance's own
      valid frames; nothing to compute beforehand, nothing in the state_dict.
    - ``mode="global"``: mean and standard deviation of each feature over all valid frames
      of a data set, accumulated in float64 by :meth:`accumulate` and fixed by
      :meth:`finalize`. They are persistent buffers ``mean [F]``, ``std [F]`` and ``frames``
      (how many frames they came from; 0 means "not computed yet"), so they travel with
      checkpoints. With ``num_features=None`` the feature count is taken from the first
      batch accumulated or the statistics loaded.

    Variances are population variances (divided by the frame count).
    """

    def __init__(
        self,
        mode: Literal["utterance", "global"] = "utterance",
        num_features: PositiveInt | None = None,
        eps: PositiveFloat = 1e-5,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if num_features is not None and num_features <= 0:
            raise ValueError(f"num_features must be positive or None, got {num_features}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.mode = mode
        self.num_features = num_features
        self.eps = eps
        # A host-side flag mirroring ``frames > 0``, so forward() needs no device-to-host sync.
        self._has_statistics = False
        self._reset_accumulators()
        if mode == "global":
            size = 0 if num_features is None else num_features  # resized when statistics arrive
            self.register_buffer("mean", torch.zeros(size))
            self.register_buffer("std", torch.ones(size))
            self.register_buffer("frames", torch.zeros((), dtype=torch.int64))

    @property
    def has_statistics(self) -> bool:
        """Whether global statistics are ready (always True in utterance mode, which needs none)."""
        return self.mode == "utterance" or self._has_statistics

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self._check_batch(features, lengths)
        if self.mode == "utterance":
            padding = padding_mask(lengths, features.shape[-1])[:, None, :]  # [B, 1, T]
            valid_features = features.masked_fill(padding, 0.0)
            # An empty utterance divides by 1, not 0: its (all padding) output is 0 anyway.
            count = lengths.clamp_min(1).to(features.dtype)[:, None, None]  # [B, 1, 1]
            mean = valid_features.sum(-1, keepdim=True) / count  # [B, F, 1]
            centred = (features - mean).masked_fill(padding, 0.0)
            variance = centred.square().sum(-1, keepdim=True) / count  # [B, F, 1]
        else:
            if not self._has_statistics:
                raise RuntimeError(f"FeatureNormalization(mode='global') has no statistics yet: {_HOW_TO_COMPUTE}")
            mean = self.mean.to(features.dtype)[None, :, None]  # [1, F, 1]
            variance = self.std.to(features.dtype).square()[None, :, None]
            centred = features - mean
        return zero_padding(centred * torch.rsqrt(variance + self.eps), lengths), lengths

    @torch.no_grad()
    def accumulate(self, features: torch.Tensor, lengths: torch.Tensor) -> None:
        """Add a batch's valid frames to the running float64 sums (global mode)."""
        if self.mode != "global":
            raise RuntimeError("accumulate() is for mode='global'; utterance mode needs no statistics")
        lengths = self._check_batch(features, lengths)
        padding = padding_mask(lengths, features.shape[-1])[:, None, :]  # [B, 1, T]
        # float64 sums: a data set has millions of frames, float32 would lose the variance.
        values = features.detach().to(torch.float64).masked_fill(padding, 0.0)  # [B, F, T]
        batch_sum = values.sum(dim=(0, 2))  # [F]
        batch_sum_of_squares = values.square().sum(dim=(0, 2))
        if self._sum is None:
            self._sum, self._sum_of_squares = batch_sum, batch_sum_of_squares
            self._accumulated_frames = lengths.sum()
        else:
            self._sum += batch_sum.to(self._sum.device)
            self._sum_of_squares += batch_sum_of_squares.to(self._sum.device)
            self._accumulated_frames += lengths.sum().to(self._sum.device)

    @torch.no_grad()
    def finalize(self) -> None:
        """Turn the accumulated sums into ``mean``, ``std`` and ``frames``, and clear the sums."""
        if self.mode != "global":
            raise RuntimeError("finalize() is for mode='global'; utterance mode needs no statistics")
        frames = 0 if self._sum is None else int(self._accumulated_frames)  # host sync, once
        if frames == 0:
            raise RuntimeError("finalize() found no valid frames: accumulate(features, lengths) over the data first")
        mean = self._sum / frames
        # E[x^2] - E[x]^2 in float64; clamped since rounding can leave a tiny negative.
        variance = (self._sum_of_squares / frames - mean.square()).clamp_min(0.0)
        self._set_statistics(mean, variance.sqrt(), frames)
        self._reset_accumulators()

    def statistics_dict(self) -> dict[str, Any]:
        """Global statistics as plain JSON-able values (lists of floats, ints)."""
        self._require_statistics()
        return {
            "mode": self.mode,
            "num_features": int(self.mean.numel()),
            "frames": int(self.frames),
            "mean": self.mean.double().tolist(),
            "std": self.std.double().tolist(),
        }

    def load_statistics_dict(self, statistics: dict[str, Any]) -> None:
        """Restore what :meth:`statistics_dict` returned (e.g. after a JSON round trip)."""
        if self.mode != "global":
            raise RuntimeError("load_statistics_dict() is for mode='global'; utterance mode has no statistics")
        if statistics.get("mode", "global") != "global":
            raise ValueError(f"expected global statistics, got mode={statistics['mode']!r}")
        mean = torch.tensor(statistics["mean"], dtype=torch.float64)
        std = torch.tensor(statistics["std"], dtype=torch.float64)
        frames = int(statistics["frames"])
        if mean.dim() != 1 or mean.shape != std.shape:
            raise ValueError(
                f"mean and std must be flat lists of equal length, got shapes {tuple(mean.shape)} and {tuple(std.shape)}"
            )
        if frames <= 0 or not all(math.isfinite(value) for value in statistics["mean"] + statistics["std"]):
            raise ValueError("statistics need frames > 0 and finite mean and std")
        self._set_statistics(mean, std, frames)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, num_features={self.num_features}, eps={self.eps}"

    def _check_batch(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3:
            raise ConfigError(
                f"features: normalize takes features [batch, num_features, frames], got shape {tuple(features.shape)}; "
                "list the features in order: a waveform transform (log_mel, mfcc) first, then normalize and spec_augment"
            )
        expected = self.num_features
        if expected is None and self.mode == "global" and self._sum is not None:
            expected = self._sum.numel()
        if expected is None and self._has_statistics:
            expected = self.mean.numel()
        if expected is not None and features.shape[1] != expected:
            raise ConfigError(
                f"features: normalize expects {expected} features, got {features.shape[1]} (shape {tuple(features.shape)}); "
                "set its num_features to the features' size"
            )
        return lengths.to(device=features.device, dtype=torch.int64)

    def _require_statistics(self) -> None:
        if self.mode != "global":
            raise RuntimeError("utterance mode has no data-set statistics")
        if not self._has_statistics:
            raise RuntimeError(f"no global statistics yet: {_HOW_TO_COMPUTE}")

    def _set_statistics(self, mean: torch.Tensor, std: torch.Tensor, frames: int) -> None:
        if self.num_features is not None and mean.numel() != self.num_features:
            raise ValueError(f"statistics have {mean.numel()} features, this module expects {self.num_features}")
        # Assigning to a registered buffer name replaces the buffer (its size may change when
        # num_features is None), keeping the module's current device and dtype.
        self.mean = mean.to(device=self.mean.device, dtype=self.mean.dtype)
        self.std = std.to(device=self.std.device, dtype=self.std.dtype)
        self.frames = torch.tensor(frames, dtype=torch.int64, device=self.frames.device)
        self._has_statistics = True

    def _reset_accumulators(self) -> None:
        self._sum: torch.Tensor | None = None  # [F] float64
        self._sum_of_squares: torch.Tensor | None = None  # [F] float64
        self._accumulated_frames: torch.Tensor | None = None  # [] int64

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # With num_features=None the buffers start empty: take the checkpoint's sizes, so
        # load_state_dict works on a freshly built module.
        if self.mode == "global" and self.num_features is None:
            for name in ("mean", "std"):
                stored = state_dict.get(prefix + name)
                if stored is not None:
                    current = getattr(self, name)
                    setattr(self, name, torch.empty(stored.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        stored_frames = state_dict.get(prefix + "frames")
        if self.mode == "global" and stored_frames is not None:
            self._has_statistics = int(stored_frames) > 0  # host sync, once per load
