"""SpecAugment (Park et al., 2019) on padded feature batches: time warp, frequency and time masks.

Shapes: ``features [B, F, frames]``, ``lengths [B]`` valid frames (int64) -> the same shapes,
``lengths`` unchanged. Every change stays inside each utterance's valid frames: padding
frames come out exactly as they went in (0, from the feature modules), and an utterance's
time masks and warp are drawn from its own length.

Randomness comes from torch's RNG, the global CPU one (seeded by ``torch.manual_seed``) or
an explicit ``generator``, and the number of draws per batch depends only on the batch size
and the configuration, never on the lengths: a fixed seed reproduces the same augmentation
on any device.

Example:

    >>> augment = SpecAugment(freq_masks=1, freq_width=4, time_masks=1, time_width=10)
    >>> features = torch.ones(2, 8, 20)
    >>> features[1, :, 12:] = 0.0  # padding of the second utterance
    >>> lengths = torch.tensor([20, 12])
    >>> masked, masked_lengths = augment(features, lengths, generator=torch.Generator().manual_seed(0))
    >>> masked.shape, masked_lengths.tolist(), bool(masked[1, :, 12:].eq(0).all())
    (torch.Size([2, 8, 20]), [20, 12], True)
    >>> augment.eval()(features, lengths)[0] is features  # identity outside training
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cadence.bounds import NonNegativeInt, Probability
from cadence.data.padding import padding_mask
from cadence.errors import ConfigError
from cadence.registry import FEATURES
from cadence.runtime.draws import uniform_draws

__all__ = ["SpecAugment"]


@FEATURES.register("spec_augment")
class SpecAugment(nn.Module):
    """Time warp, then ``freq_masks`` frequency masks and ``time_masks`` time masks; training mode only.

    - Frequency mask: ``width ~ U{0..freq_width}`` bands from ``start ~ U{0..F - width}``,
      over the valid frames only.
    - Time mask: ``width ~ U{0..min(time_width, floor(time_width_ratio * length))}`` frames
      from ``start ~ U{0..length - width}``, with the utterance's own ``length``.
    - Time warp (``time_warp = W > 0``, utterances with ``length > 2 W``): a centre
      ``c ~ U{W..length - W - 1}`` moves by ``shift ~ U{-W..W}``; frames ``[0, c)`` are
      linearly resampled onto ``[0, c + shift)`` and ``[c, length)`` onto
      ``[c + shift, length)``, so the length is kept.

    Masked values become ``mask_value``. Masks drawn for one utterance may overlap.
    """

    def __init__(
        self,
        freq_masks: NonNegativeInt = 2,
        freq_width: NonNegativeInt = 27,
        time_masks: NonNegativeInt = 2,
        time_width: NonNegativeInt = 40,
        time_width_ratio: Probability = 1.0,
        time_warp: NonNegativeInt = 0,
        mask_value: float = 0.0,
    ) -> None:
        super().__init__()
        counts = {"freq_masks": freq_masks, "freq_width": freq_width, "time_masks": time_masks}
        counts.update(time_width=time_width, time_warp=time_warp)
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= time_width_ratio <= 1.0:
            raise ValueError(f"time_width_ratio must be in [0, 1], got {time_width_ratio}")
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width = time_width
        self.time_width_ratio = time_width_ratio
        self.time_warp = time_warp
        self.mask_value = mask_value

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return features, lengths
        if features.dim() != 3:
            raise ConfigError(
                f"features: spec_augment takes features [batch, F, frames], got shape {tuple(features.shape)}; "
                "list the features in order: a waveform transform (log_mel, mfcc) first, then normalize and spec_augment"
            )
        lengths = lengths.to(device=features.device, dtype=torch.int64)
        if self.time_warp > 0:
            features = self._warp_time(features, lengths, generator)
        if self.freq_masks == 0 and self.time_masks == 0:
            return features, lengths

        padding = padding_mask(lengths, features.shape[-1])  # [B, T]
        masked = self._frequency_mask(features, generator)[:, :, None] & ~padding[:, None, :]  # [B, F, T]
        masked = masked | self._time_mask(features, lengths, generator)[:, None, :]
        return features.masked_fill(masked, self.mask_value), lengths

    def _frequency_mask(self, features: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``[B, F]`` bool: the bands inside any of each utterance's frequency masks."""
        batch, bands, _ = features.shape
        largest = torch.full((batch, 1), min(self.freq_width, bands), device=features.device)
        return _union_of_spans(
            uniform_draws((batch, self.freq_masks, 2), generator, features.device),
            largest_width=largest,
            extent=torch.full((batch, 1), bands, device=features.device),
            size=bands,
        )

    def _time_mask(
        self, features: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``[B, T]`` bool: the frames inside any of each utterance's time masks (all valid frames)."""
        batch, _, frames = features.shape
        ratio_limit = torch.floor(lengths.to(torch.float64) * self.time_width_ratio).to(torch.int64)
        largest = ratio_limit.clamp(max=self.time_width)[:, None]  # [B, 1]
        return _union_of_spans(
            uniform_draws((batch, self.time_masks, 2), generator, features.device),
            largest_width=largest,
            extent=lengths[:, None],
            size=frames,
        )

    def _warp_time(
        self, features: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Each long enough utterance's valid frames, stretched on either side of a moved centre."""
        warp = self.time_warp
        draws = uniform_draws((features.shape[0], 2), generator, torch.device("cpu")).tolist()  # [B, 2]
        lengths_on_host = lengths.tolist()  # host sync: the loop below needs plain ints
        warped = features
        for row, (length, (centre_draw, shift_draw)) in enumerate(zip(lengths_on_host, draws)):
            if length <= 2 * warp:
                continue
            centre = warp + int(centre_draw * (length - 2 * warp))  # in [W, length - W)
            moved_centre = centre + int(shift_draw * (2 * warp + 1)) - warp  # in [0, length)
            if moved_centre == centre:
                continue
            utterance = features[row : row + 1, :, :length]  # [1, F, length]
            pieces = [
                _resample(utterance[..., :centre], moved_centre),
                _resample(utterance[..., centre:], length - moved_centre),
            ]
            if warped is features:
                warped = features.clone()  # copy once, and only when something changes
            warped[row, :, :length] = torch.cat(pieces, dim=-1)[0]
        return warped

    def extra_repr(self) -> str:
        return (
            f"freq_masks={self.freq_masks}, freq_width={self.freq_width}, time_masks={self.time_masks}, "
            f"time_width={self.time_width}, time_width_ratio={self.time_width_ratio}, "
            f"time_warp={self.time_warp}, mask_value={self.mask_value}"
        )


def _union_of_spans(
    draws: torch.Tensor, largest_width: torch.Tensor, extent: torch.Tensor, size: int
) -> torch.Tensor:
    """``[B, size]`` bool: the union of random spans ``[start, start + width)`` per row.

    ``draws [B, spans, 2]`` are uniform in [0, 1): the first gives ``width ~ U{0..largest_width}``,
    the second ``start ~ U{0..extent - width}``, so every span ends within ``extent [B, 1]``.
    """
    width = torch.floor(draws[..., 0] * (largest_width + 1)).to(torch.int64)  # [B, spans]
    start = torch.floor(draws[..., 1] * (extent - width + 1)).to(torch.int64)  # [B, spans]
    positions = torch.arange(size, device=draws.device)[None, None, :]  # [1, 1, size]
    inside = (positions >= start[..., None]) & (positions < (start + width)[..., None])  # [B, spans, size]
    return inside.any(dim=1)


def _resample(frames: torch.Tensor, size: int) -> torch.Tensor:
    """``frames [1, F, n]`` linearly resampled to ``[1, F, size]`` (an empty piece when size is 0)."""
    if size == 0:
        return frames[..., :0]
    return F.interpolate(frames, size=size, mode="linear", align_corners=False)
