"""Additive noise at a signal-to-noise ratio drawn per utterance: recorded noise, or babble.

Each chosen utterance gets noise scaled so that, over the utterance's valid samples, the
ratio of the utterance's power to the noise's is the SNR drawn uniformly from ``snr_db``
(in dB): ``gain = sqrt(P_signal / (P_noise 10^(snr / 10)))``. The noise comes from
``source``:

- ``folder``: the audio files of ``noise_dir`` (read once, mono, resampled to ``sample_rate``,
  kept in memory: mind the size of the folder), one drawn per utterance and a random excerpt
  of it, from a random start, looped when shorter than the utterance;
- ``batch``: another utterance of the same batch (babble, overlapping speech as PASE+ adds
  it), never the utterance itself, from a random start within its valid samples, looped
  likewise. A batch of one has no other utterance: it is left clean.

Three draws per utterance (the SNR, which noise or partner, where the excerpt starts),
whatever the source and the lengths. A silent utterance or a silent excerpt stays as it was
(no SNR can be reached).

Example:

    >>> babble = AdditiveNoise(source="batch", snr_db=(10.0, 10.0), p=1.0)
    >>> speech = torch.randn(2, 1000)
    >>> noisy, lengths = babble(speech, torch.tensor([1000, 1000]))
    >>> added = noisy - speech
    >>> round(10 * math.log10(speech[0].pow(2).sum() / added[0].pow(2).sum()), 2)  # dB
    10.0
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from cadence.bounds import PositiveInt, Probability
from cadence.data.distortions.common import Distortion, checked_range, checked_value, load_audio_folder, uniform_between
from cadence.data.padding import zero_padding
from cadence.errors import ConfigError
from cadence.registry import FEATURES

__all__ = ["AdditiveNoise"]

NoiseSource = Literal["folder", "batch"]


@FEATURES.register("additive_noise")
class AdditiveNoise(Distortion):
    """Add noise from ``source`` (``folder``: ``noise_dir``'s files; ``batch``: other utterances)
    to each chosen utterance (probability ``p``) at an SNR drawn uniformly from ``snr_db``.
    ``sample_rate``: the data's (filled in from the data when a recipe leaves it out), what the
    noise files are resampled to."""

    registered_as = "additive_noise"

    def __init__(
        self,
        sample_rate: PositiveInt = 8000,
        p: Probability = 0.5,
        snr_db: tuple[float, float] = (0.0, 15.0),
        source: NoiseSource = "folder",
        noise_dir: str | None = None,
    ) -> None:
        super().__init__(p, draws_per_utterance=3)
        name = self.registered_as
        self.sample_rate = checked_value(name, "sample_rate", sample_rate, above=0, integer=True)
        self.snr_db = checked_range(name, "snr_db", snr_db)
        if source not in ("folder", "batch"):
            raise ConfigError(f"{name}: source must be 'folder' (noise_dir's files) or 'batch' (other utterances), got {source!r}")
        if source == "folder" and noise_dir is None:
            raise ConfigError(f"{name}: source 'folder' needs noise_dir, a folder of noise recordings; "
                              "or set source: batch to add other utterances of the batch")
        if source == "batch" and noise_dir is not None:
            raise ConfigError(f"{name}: noise_dir is only read with source: folder; remove it, or set source: folder")
        self.source = source
        self.noise_dir = noise_dir
        noises = [] if noise_dir is None else load_audio_folder(noise_dir, self.sample_rate, name, "noise_dir")
        lengths = torch.tensor([len(noise) for noise in noises], dtype=torch.int64)
        # All the noises end to end, one flat buffer (no padding to the longest): moved with
        # .to(device), never saved in checkpoints (the files are its source).
        self.register_buffer("noise_bank", torch.cat(noises) if noises else torch.zeros(0), persistent=False)
        self.register_buffer("noise_lengths", lengths, persistent=False)  # [N]
        self.register_buffer("noise_starts", torch.cumsum(lengths, 0) - lengths, persistent=False)  # [N]

    def distort(self, waveforms: torch.Tensor, lengths: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        if self.source == "batch":
            if waveforms.shape[0] < 2:
                return waveforms  # no other utterance to add
            noise = self._other_utterances(waveforms, lengths, draws[:, 1], draws[:, 2])
        else:
            noise = self._excerpts(waveforms.shape[-1], draws[:, 1], draws[:, 2]).to(waveforms.dtype)
        noise = zero_padding(noise, lengths)  # [B, S]
        # Powers over the valid samples (both sums over the same ones: the length cancels).
        signal_energy = waveforms.square().sum(-1)  # [B]
        noise_energy = noise.square().sum(-1)  # [B]
        snr = uniform_between(draws[:, 0], self.snr_db).to(waveforms.dtype)  # [B], dB
        audible = (signal_energy > 0) & (noise_energy > 0)
        gain = torch.sqrt(signal_energy / (noise_energy.clamp_min(1e-30) * 10.0 ** (snr / 10.0)))
        return waveforms + torch.where(audible, gain, 0.0)[:, None] * noise

    def _other_utterances(
        self, waveforms: torch.Tensor, lengths: torch.Tensor, partner_draws: torch.Tensor, start_draws: torch.Tensor
    ) -> torch.Tensor:
        """``[B, S]``: for utterance ``b``, another one's valid samples, from a random start, looped."""
        batch, samples = waveforms.shape
        rows = torch.arange(batch, device=waveforms.device)
        # An offset in 1..B-1 from the utterance's own row: any other row, never its own.
        offsets = 1 + (partner_draws * (batch - 1)).to(torch.int64).clamp(max=batch - 2)
        partners = (rows + offsets) % batch  # [B]
        partner_lengths = lengths[partners].clamp_min(1)  # an empty partner gives silence (its padding)
        starts = (start_draws * partner_lengths).to(torch.int64)  # [B]
        positions = (starts[:, None] + torch.arange(samples, device=waveforms.device)[None, :]) % partner_lengths[:, None]
        return waveforms[partners[:, None], positions]

    def _excerpts(self, samples: int, noise_draws: torch.Tensor, start_draws: torch.Tensor) -> torch.Tensor:
        """``[B, S]``: for each utterance, a drawn noise file from a drawn start, looped."""
        count = self.noise_lengths.shape[0]
        which = (noise_draws * count).to(torch.int64).clamp(max=count - 1)  # [B]
        noise_lengths = self.noise_lengths[which]  # [B]
        starts = (start_draws * noise_lengths).to(torch.int64)  # [B]
        positions = (starts[:, None] + torch.arange(samples, device=noise_draws.device)[None, :]) % noise_lengths[:, None]
        return self.noise_bank[self.noise_starts[which][:, None] + positions]

    def extra_repr(self) -> str:
        noise = f", noise_dir={self.noise_dir!r}" if self.noise_dir is not None else ""
        return f"sample_rate={self.sample_rate}, p={self.p}, snr_db={list(self.snr_db)}, source={self.source!r}{noise}"
