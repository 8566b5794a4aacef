"""Speed perturbation (Ko et al., 2015) on padded waveform batches, where the model runs.

Each training utterance is played ``factor`` times as fast, the factor drawn uniformly from
``factors`` (Kaldi's and ESPnet's ``0.9, 1.0, 1.1`` by default): its duration becomes
``length / factor`` and every frequency is multiplied by ``factor``, as when a tape runs fast
or slow. It is resampling from ``sample_rate`` to ``sample_rate / factor``, done here with a
Hann-windowed sinc (band-limited) interpolator, so that speeding up does not fold energy
above the Nyquist frequency back into the band.

Shapes: ``waveforms [B, samples]``, ``lengths [B]`` -> ``[B, max new length]`` and the new
lengths ``round(length / factor)``; samples beyond them are 0. List it first among the
features, before the waveform transform (``log_mel``, ``mfcc``). The number of random draws
per batch is the batch size, whatever the lengths, so a seed reproduces the augmentation and
resume is exact. Outside training (evaluation, normalization statistics) it is the identity.

A length-changing augmentation cannot be used with targets tied to frames (a frame-wise
alignment): the ``framewise`` task refuses it.

Example:

    >>> perturb = SpeedPerturbation(factors=[1.25])
    >>> waveforms, lengths = torch.ones(2, 100), torch.tensor([100, 60])
    >>> faster, faster_lengths = perturb(waveforms, lengths)
    >>> faster.shape, faster_lengths.tolist()  # 100 / 1.25 = 80, 60 / 1.25 = 48
    (torch.Size([2, 80]), [80, 48])
    >>> perturb.eval()(waveforms, lengths)[0] is waveforms  # identity outside training
    True
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from cadence.bounds import PositiveFloat, PositiveInt
from cadence.data.features import require_waveforms
from cadence.data.padding import zero_padding
from cadence.registry import FEATURES
from cadence.runtime.draws import uniform_draws

__all__ = ["SpeedPerturbation", "change_speed"]


@FEATURES.register("speed_perturb")
class SpeedPerturbation(nn.Module):
    """Each training utterance sped up or slowed down by a factor drawn from ``factors``.

    ``zero_crossings``: the interpolation kernel's half-width, in zero crossings of its sinc
    (more: a sharper anti-aliasing filter, more work; with 16, at a speed-up of 1.1, a tone 9% above
    the new Nyquist frequency comes out 34 dB weaker, one 4% below it passes at -2 dB).
    """

    changes_duration = True  # what tasks with frame-level targets (``framewise``) check for

    def __init__(self, factors: list[PositiveFloat] = (0.9, 1.0, 1.1), zero_crossings: PositiveInt = 16) -> None:
        super().__init__()
        factors = [float(factor) for factor in factors]
        if not factors or any(not math.isfinite(factor) or factor <= 0 for factor in factors):
            raise ValueError(f"factors must be a non-empty list of numbers > 0, got {factors}")
        if zero_crossings < 1:
            raise ValueError(f"zero_crossings must be >= 1, got {zero_crossings}")
        self.factors = factors
        self.zero_crossings = zero_crossings

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return waveforms, lengths
        require_waveforms(waveforms, "speed_perturb")
        # One draw per utterance (cadence.runtime.draws): never a number that depends on the lengths.
        draws = uniform_draws((waveforms.shape[0],), generator)
        choices = (draws * len(self.factors)).floor().to(torch.int64).clamp(max=len(self.factors) - 1).tolist()
        lengths = lengths.to(waveforms.device)
        groups = []  # (rows, their perturbed waveforms, their new lengths), one per factor drawn
        for index, factor in enumerate(self.factors):
            rows = torch.tensor([row for row, choice in enumerate(choices) if choice == index], device=waveforms.device)
            if len(rows):
                groups.append((rows, *change_speed(waveforms[rows], lengths[rows], factor, self.zero_crossings)))
        perturbed = waveforms.new_zeros(waveforms.shape[0], max((group.shape[-1] for _, group, _ in groups), default=0))
        new_lengths = lengths.clone()
        for rows, group, group_lengths in groups:
            perturbed[rows, : group.shape[-1]] = group
            new_lengths[rows] = group_lengths
        return perturbed, new_lengths

    def extra_repr(self) -> str:
        return f"factors={self.factors}, zero_crossings={self.zero_crossings}"


def change_speed(
    waveforms: torch.Tensor, lengths: torch.Tensor, factor: float, zero_crossings: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """``waveforms [B, samples]`` played ``factor`` times as fast: ``round(length / factor)`` samples each.

    Output sample ``j`` is the band-limited value of the input at time ``t = j * factor`` (in
    input samples): ``sum_k x[k] * c * sinc(c * (t - k)) * hann((t - k) / half_width)``, with the
    cut-off ``c = min(1, 1 / factor)`` of the Nyquist frequency so that a speed-up leaves little
    to alias. Samples beyond each length count as silence. A factor of 1 returns the input.

    With ``factor = p / q`` in lowest terms (``0.9 = 9 / 10``), output samples ``j = m q + r``
    read the input from ``m p`` on with one kernel per phase ``r``: a strided ``conv1d`` with
    ``q`` output channels (polyphase resampling), so the cost is a convolution, not a gather.

    >>> tone = torch.sin(2 * math.pi * 500 * torch.arange(8000) / 8000)[None]  # 500 Hz at 8 kHz
    >>> faster, faster_lengths = change_speed(tone, torch.tensor([8000]), 1.1)
    >>> faster_lengths.tolist(), round(torch.fft.rfft(faster[0]).abs().argmax().item() * 8000 / 7273)  # ~550 Hz
    ([7273], 550)
    """
    new_lengths = torch.round(lengths.to(torch.float64) / factor).to(lengths.dtype)
    if factor == 1.0:
        return waveforms, lengths
    ratio = Fraction(factor).limit_denominator(_LARGEST_PHASE_COUNT)
    stride, phases = ratio.numerator, ratio.denominator  # input samples per block, output samples per block
    cutoff = min(1.0, 1.0 / factor)
    half_width = math.ceil(zero_crossings / cutoff)  # kernel reach, in input samples, on each side
    kernels = _phase_kernels(stride, phases, cutoff, half_width, waveforms.dtype, waveforms.device)  # [q, 1, K]
    longest = max(new_lengths.tolist(), default=0)  # host sync: output sizes are plain ints
    if longest == 0:
        return waveforms[:, :0], new_lengths
    blocks = -(-longest // phases)  # ceil: blocks of q output samples
    silence = zero_padding(waveforms, lengths)
    needed = (blocks - 1) * stride + kernels.shape[-1]  # input samples the last block reads, with the left pad
    padded = F.pad(silence, (half_width, max(0, needed - half_width - silence.shape[-1])))
    by_phase = F.conv1d(padded[:, None, :], kernels, stride=stride)[..., :blocks]  # [B, q, blocks]
    interleaved = by_phase.transpose(1, 2).reshape(waveforms.shape[0], blocks * phases)  # sample m q + r
    return zero_padding(interleaved[:, :longest], new_lengths), new_lengths


# A factor is turned into p / q with q at most this: q kernels of about p + 32 / c taps each.
_LARGEST_PHASE_COUNT = 1000


def _phase_kernels(
    stride: int, phases: int, cutoff: float, half_width: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``[phases, 1, stride + 2 half_width + 1]``: phase ``r`` weights input ``m p + s`` (``s``
    from ``-half_width``) for the output at time ``m p + r p / q``."""
    offsets = torch.arange(-half_width, stride + half_width + 1, dtype=torch.float64)  # s
    times = torch.arange(phases, dtype=torch.float64) * stride / phases  # r p / q, in [0, p)
    distance = times[:, None] - offsets[None, :]  # [q, K]
    window = torch.where(distance.abs() < half_width, 0.5 + 0.5 * torch.cos(math.pi * distance / half_width), 0.0)
    weights = cutoff * torch.sinc(cutoff * distance) * window
    return weights[:, None, :].to(dtype=dtype, device=device)
