"""The prosody labeller: PASE+'s per-frame pitch, voicing, energy and zero-crossing rate.

``prosody`` gives 4 channels per encoder frame, each computed over ``window_seconds``
(40 ms by default) of the clean signal centred on the frame's centre (sample
``t * stride + stride // 2``):

0. log f0 (Hz) where the frame is voiced, 0 where it is not;
1. voicing, 0 or 1;
2. log energy: ``log(max(mean power, 1e-10))``, the power averaged under a Hann window (so
   the frame's centre weighs most);
3. zero-crossing rate: the fraction of adjacent sample pairs whose signs differ (a tone of
   ``f`` Hz gives ``2 f / sample_rate``).

Pitch: the normalized cross-correlation (NCCF, as in Talkin's RAPT) of each frame with
itself ``lag`` samples on, over the lags of ``f0_min .. f0_max``::

    nccf(lag) = sum x[n] x[n + lag] / sqrt(sum x[n]^2 * sum x[n + lag]^2),  n < window - max lag - 1

(each frame's mean removed first). The chosen lag is the shortest local maximum within 0.1
of the best one (a periodic signal peaks at every multiple of its period: this keeps the
period itself), refined by a parabola through it and its neighbours; ``f0 = sample_rate /
lag``. A frame is voiced when that peak reaches ``voicing_threshold`` and its power reaches
``silence_db`` (dB relative to a full-scale 1.0 signal). All of it is batched tensor work,
one FFT per frame, no loop over frames or utterances.

Normalization (``normalize``, default ``"utterance"``): log f0 to zero mean and unit variance
over the utterance's voiced frames (unvoiced frames stay 0), log energy and zero-crossing
rate over its valid frames; voicing stays 0/1 (a target for a classifier-like regressor).
``"none"`` keeps the values above.

>>> prosody = Prosody(sample_rate=8000, stride=160, normalize="none")
>>> tone = torch.sin(2 * torch.pi * 200.0 * torch.arange(8000) / 8000)
>>> targets, target_lengths = prosody(tone[None, :], torch.tensor([8000]))
>>> targets.shape, target_lengths.tolist()
(torch.Size([1, 4, 50]), [50])
>>> round(targets[0, 0, 25].exp().item()), targets[0, 1, 25].item()  # f0 and voicing mid-utterance
(200, 1.0)
"""

from __future__ import annotations

import math

import torch

from cadence.bounds import PositiveFloat, Probability
from cadence.data.features import in_float32
from cadence.data.labellers.framing import Labeller, Normalization, centred_frames, smallest_power_of_two, standardize
from cadence.data.padding import padding_mask
from cadence.registry import LABELLERS

__all__ = ["Prosody"]

_POWER_FLOOR = 1e-10  # before the log: a silent frame's log energy is log(1e-10), not -inf
# A shorter lag wins if its NCCF peak is within this of the best peak (avoids picking a multiple of the period).
_SHORTER_LAG_MARGIN = 0.1
_TINY = 1e-12  # keeps the NCCF of silence at 0 instead of 0 / 0

LOG_F0, VOICING, LOG_ENERGY, ZERO_CROSSING_RATE = range(4)  # the channels, in order


@LABELLERS.register("prosody")
class Prosody(Labeller):
    """Log f0, voicing, log energy and zero-crossing rate per frame: ``[B, 4, T]`` (see the module docstring)."""

    registered = "prosody"
    size = 4

    def __init__(self, sample_rate: int, stride: int, f0_min: PositiveFloat = 60.0, f0_max: PositiveFloat = 400.0,
                 voicing_threshold: Probability = 0.5, silence_db: float = -60.0, window_seconds: PositiveFloat = 0.04,
                 normalize: Normalization = "utterance") -> None:
        super().__init__(sample_rate, stride, normalize)
        if f0_max > sample_rate / 2:
            self.invalid("f0_max", f0_max, f"is above Nyquist ({sample_rate / 2:g} Hz at {sample_rate} Hz)",
                         f"give f0_max <= {sample_rate / 2:g}")
        if f0_min >= f0_max:
            self.invalid("f0_min", f0_min, f"is not below f0_max ({f0_max:g} Hz)", f"give f0_min < {f0_max:g}")
        self.f0_min, self.f0_max = f0_min, f0_max
        self.min_lag = math.floor(sample_rate / f0_max)  # >= 2 (f0_max <= Nyquist): lag - 1 exists and is not 0
        self.max_lag = math.ceil(sample_rate / f0_min)
        self.window = self.window_samples("window_seconds", window_seconds)
        # Every lag sums the same number of products, at least one longest period's worth.
        self.terms = self.window - self.max_lag - 1
        if self.terms < self.max_lag:
            shortest = (2 * self.max_lag + 1) / sample_rate
            self.invalid("window_seconds", window_seconds, f"is too short to see two periods of f0_min={f0_min:g} Hz",
                         f"give window_seconds >= {shortest:.4g} or a higher f0_min")
        self.window_seconds = window_seconds
        self.voicing_threshold = voicing_threshold
        self.silence_db = silence_db
        self.fft_size = smallest_power_of_two(self.window)  # no wrap-around: lag + n < window for every product
        hann = torch.hann_window(self.window, periodic=True, dtype=torch.float64)
        self.register_buffer("hann", (hann / hann.sum()).float(), persistent=False)  # [window], sums to 1

    @in_float32
    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        waveforms, lengths = self.prepared(waveforms, lengths)  # [B, S], [B]
        empty = self.nothing_to_analyse(waveforms, lengths)
        if empty is not None:
            return empty
        frames = centred_frames(waveforms, self.stride, self.window)  # [B, T, window]
        power = (frames.square() * self.hann.to(frames.dtype)).sum(-1)  # [B, T], Hann-weighted mean power
        signs = frames >= 0
        crossing_rate = (signs[..., 1:] != signs[..., :-1]).to(frames.dtype).mean(-1)  # [B, T]
        lag, strength = self.best_lags(frames)  # [B, T], [B, T]
        voiced = (strength >= self.voicing_threshold) & (power >= 10.0 ** (self.silence_db / 10.0))
        log_f0 = torch.where(voiced, torch.log(self.sample_rate / lag), torch.zeros_like(lag))
        log_energy = torch.log(power.clamp_min(_POWER_FLOOR))
        targets = torch.stack([log_f0, voiced.to(frames.dtype), log_energy, crossing_rate], dim=1)  # [B, 4, T]
        return self.finished(targets, lengths)

    def standardized(self, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        """Log f0 over voiced frames, log energy and crossing rate over valid frames; voicing as it is."""
        valid = ~padding_mask(target_lengths, targets.shape[-1])  # [B, T]
        voiced = valid & (targets[:, VOICING] > 0.5)
        log_f0 = standardize(targets[:, LOG_F0 : LOG_F0 + 1], voiced[:, None, :])  # [B, 1, T]
        rest = standardize(targets[:, LOG_ENERGY:], valid[:, None, :])  # [B, 2, T]
        return torch.cat([log_f0, targets[:, VOICING : VOICING + 1], rest], dim=1)

    def normalized_cross_correlation(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, T, window] -> [B, T, max_lag + 2]``: the NCCF at lags ``0 .. max_lag + 1``."""
        frames = frames - frames.mean(-1, keepdim=True)  # a DC offset would correlate at every lag
        head = frames[..., : self.terms]  # x[n], n < terms
        # Cross-correlation by FFT: sum over n < terms of x[n] x[n + lag], for every lag at once.
        spectrum = torch.fft.rfft(head, self.fft_size).conj() * torch.fft.rfft(frames, self.fft_size)
        products = torch.fft.irfft(spectrum, self.fft_size)[..., : self.max_lag + 2]  # [B, T, lags]
        # sum x[n + lag]^2 over n < terms, for every lag: differences of a running sum (in float64:
        # the differences of large sums would lose the small ones in float32).
        running = torch.cumsum(frames.double().square(), dim=-1)
        running = torch.cat([running.new_zeros(*running.shape[:-1], 1), running], dim=-1)  # [B, T, window + 1]
        starts = torch.arange(self.max_lag + 2, device=frames.device)
        shifted_energy = (running[..., starts + self.terms] - running[..., starts]).clamp_min(0.0).to(frames.dtype)
        scale = shifted_energy[..., :1].sqrt() * shifted_energy.sqrt()  # [B, T, lags]
        return products / scale.clamp_min(_TINY)

    def best_lags(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lag, strength)``, each ``[B, T]``: the period in samples (fractional) and its NCCF peak."""
        nccf = self.normalized_cross_correlation(frames)[..., self.min_lag - 1 :]  # lags min_lag - 1 .. max_lag + 1
        before, middle, after = nccf[..., :-2], nccf[..., 1:-1], nccf[..., 2:]  # middle: lags min_lag .. max_lag
        best = middle.amax(-1, keepdim=True)
        candidates = (middle >= before) & (middle > after) & (middle >= best - _SHORTER_LAG_MARGIN)
        # The shortest candidate (argmax returns the first maximum); none (best on the range's
        # edge, still rising): the best lag itself.
        index = torch.where(candidates.any(-1), candidates.to(frames.dtype).argmax(-1), middle.argmax(-1))[..., None]
        left, peak, right = (values.gather(-1, index)[..., 0] for values in (before, middle, after))
        # A parabola through the three points peaks within half a lag of the middle one.
        curvature = left - 2.0 * peak + right
        offset = torch.where(curvature < 0, 0.5 * (left - right) / curvature.clamp_max(-_TINY), torch.zeros_like(peak))
        lag = self.min_lag + index[..., 0].to(frames.dtype) + offset.clamp(-0.5, 0.5)
        return lag, peak

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, f0_min={self.f0_min}, f0_max={self.f0_max}, "
                f"voicing_threshold={self.voicing_threshold}, silence_db={self.silence_db}, "
                f"window_seconds={self.window_seconds}")
