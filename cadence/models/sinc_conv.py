"""SincNet's first layer (Ravanelli & Bengio, 2018): a bank of learnable band-pass filters.

Each filter is the difference of two low-pass windowed sincs, so it learns just two numbers,
its lower cut-off and its bandwidth (in Hz), instead of ``kernel_size`` free taps:

    band_pass[n] = (2 h sinc(2 h n) - 2 l sinc(2 l n)) * hamming[n]

with ``n`` the tap's offset from the centre in samples and ``l = f_low / sample_rate``, ``h =
f_high / sample_rate``, so every filter has a gain of about 1 in its pass band. (SincNet's own
code scales each filter's centre tap to 1 instead, which gives narrow bands a larger gain; the
batch norm after the layer makes either scale equivalent.) Cut-offs start evenly spaced on the mel scale from
``min_low_hz`` to the Nyquist frequency and stay in range while they learn: ``f_low >=
min_low_hz``, ``f_high - f_low >= min_band_hz``, ``f_high <= sample_rate / 2``.

Shapes: ``waveforms [B, 1, samples]`` -> ``[B, filters, samples]`` ("same" padding, stride 1).

>>> bank = SincConv(filters=4, kernel_size=101, sample_rate=8000)
>>> bank(torch.randn(2, 1, 800)).shape
torch.Size([2, 4, 800])
>>> [round(hz) for hz in bank.cutoffs()[0].tolist()]  # lower cut-offs, evenly spaced in (HTK) mels
[50, 483, 1167, 2247]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cadence.bounds import OddInt, PositiveFloat, PositiveInt

__all__ = ["SincConv"]


class SincConv(nn.Module):
    """``filters`` learnable band-pass filters of ``kernel_size`` taps (odd: the filter has a centre tap)."""

    def __init__(
        self,
        filters: PositiveInt = 64,
        kernel_size: OddInt = 251,
        sample_rate: PositiveInt = 16000,
        min_low_hz: PositiveFloat = 50.0,
        min_band_hz: PositiveFloat = 50.0,
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"sinc kernel_size must be odd (a centre tap), got {kernel_size}")
        nyquist = sample_rate / 2
        if min_low_hz + min_band_hz >= nyquist:
            raise ValueError(f"min_low_hz + min_band_hz must stay below the Nyquist frequency ({nyquist:g} Hz), "
                             f"got {min_low_hz:g} + {min_band_hz:g}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.sample_rate = sample_rate
        self.min_low_hz = min_low_hz
        self.min_band_hz = min_band_hz
        # Evenly spaced on the HTK mel scale, m = 2595 log10(1 + f / 700), as SincNet starts.
        mels = torch.linspace(_to_mel(min_low_hz), _to_mel(nyquist - min_band_hz), filters + 1, dtype=torch.float64)
        edges = (700.0 * (10.0 ** (mels / 2595.0) - 1.0)).float()  # [filters + 1] Hz
        # Learned offsets above the floors: f_low = min_low_hz + |low|, bandwidth = min_band_hz + |band|.
        self.low_hz = nn.Parameter((edges[:-1] - min_low_hz)[:, None])  # [filters, 1]
        self.band_hz = nn.Parameter((edges[1:] - edges[:-1] - min_band_hz).clamp(min=0.0)[:, None])  # [filters, 1]
        half = (kernel_size - 1) // 2
        offsets = torch.arange(-half, half + 1, dtype=torch.float32)  # tap offsets in samples
        self.register_buffer("offsets", offsets[None, :], persistent=False)  # [1, K]
        self.register_buffer("window", torch.hamming_window(kernel_size, periodic=False)[None, :], persistent=False)

    def cutoffs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f_low, f_high)`` in Hz, each ``[filters]``, inside their bounds."""
        nyquist = self.sample_rate / 2
        low = (self.min_low_hz + self.low_hz.abs()).clamp(max=nyquist - self.min_band_hz)
        high = (low + self.min_band_hz + self.band_hz.abs()).clamp(max=nyquist)
        return low[:, 0], high[:, 0]

    def kernels(self) -> torch.Tensor:
        """``[filters, 1, kernel_size]``: the band-pass filters for the current cut-offs."""
        low, high = self.cutoffs()
        low, high = low[:, None] / self.sample_rate, high[:, None] / self.sample_rate  # [filters, 1], cycles a sample
        # torch.sinc(x) = sin(pi x) / (pi x): 2 f sinc(2 f n) is the ideal low-pass of cut-off f, gain 1.
        pass_band = 2 * high * torch.sinc(2 * high * self.offsets) - 2 * low * torch.sinc(2 * low * self.offsets)
        return (pass_band * self.window)[:, None, :]

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:  # [B, 1, S] -> [B, filters, S]
        return nn.functional.conv1d(waveforms, self.kernels().to(waveforms.dtype), padding=self.kernel_size // 2)

    def extra_repr(self) -> str:
        return f"filters={self.filters}, kernel_size={self.kernel_size}, sample_rate={self.sample_rate}"


def _to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)
