"""Edge trimming: each stretch of speech loses its quiet start or end, as a more aggressive
endpointer (silence trimmer) would have cut it.

Corpora of isolated words are trimmed by an endpointer, and not all takes the same way: in
FSDD, one speaker's takes 0-9 of "eight" end at the vowel, with the closure and release of the
final /t/ cut off, while his takes 10-49 keep them. A model that learned "eight" from the
complete takes misses the cut ones (they are the validation and test takes, so the
connected-digits recipes find nearly all their errors there). This stage shows the model
words cut at several depths.

In each chosen utterance (probability ``p``):

1. Energy in frames of ``frame_s`` seconds, in dB. A frame is speech when it is within
   ``silence_db`` of the utterance's loudest frame; stretches of speech separated by less than
   ``min_pause_s`` of non-speech are one stretch (the closure inside a word is not a pause).
2. Each of the first ``max_stretches`` stretches has its start trimmed with probability
   ``edge_p`` and, independently, its end with probability ``edge_p``. A trimmed end keeps the
   stretch up to its last frame within ``threshold_db`` of the stretch's own loudest frame
   (``threshold_db`` drawn from its range for each edge); the frames after it become silence
   (zeros). A trimmed start likewise, from its first such frame.

The length is kept (the cut samples become zeros), so transcripts and lengths are unchanged.
Draws per utterance: four per stretch (start: whether, how deep; end: whether, how deep) for
``max_stretches`` stretches, used or not. Finding the stretches reads the frame energies on the
host: one device synchronisation a batch when the batch is on an accelerator.

Example: a tone that decays in two steps loses its quiet tail when the threshold lies above it:

    >>> loud, quiet = torch.ones(800), torch.full((400,), 0.05)  # 0.05 is 26 dB below 1
    >>> trim = EdgeTrim(sample_rate=8000, p=1.0, edge_p=1.0, threshold_db=(20.0, 20.0))
    >>> trimmed, lengths = trim(torch.cat([loud, quiet])[None], torch.tensor([1200]))
    >>> int(trimmed[0, :800].ne(0).sum()), int(trimmed[0, 800:].ne(0).sum())
    (800, 0)
"""

from __future__ import annotations

import math

import torch

from cadence.bounds import PositiveFloat, PositiveInt, Probability
from cadence.data.distortions.common import Distortion, checked_range, checked_value, uniform_between
from cadence.registry import FEATURES

__all__ = ["EdgeTrim", "speech_stretches"]


@FEATURES.register("edge_trim")
class EdgeTrim(Distortion):
    """Silence the quiet starts and ends of the stretches of speech in each chosen utterance
    (probability ``p``), each edge with probability ``edge_p`` (see the module docstring).
    ``sample_rate``: the data's (filled in from the data when a recipe leaves it out)."""

    registered_as = "edge_trim"

    def __init__(
        self,
        sample_rate: PositiveInt = 8000,
        p: Probability = 0.5,
        edge_p: Probability = 0.5,
        threshold_db: tuple[PositiveFloat, PositiveFloat] = (10.0, 25.0),
        silence_db: PositiveFloat = 50.0,
        min_pause_s: PositiveFloat = 0.04,
        frame_s: PositiveFloat = 0.01,
        max_stretches: PositiveInt = 16,
    ) -> None:
        name = self.registered_as
        max_stretches = int(checked_value(name, "max_stretches", max_stretches, above=0, integer=True))
        super().__init__(p, draws_per_utterance=4 * max_stretches)
        self.sample_rate = checked_value(name, "sample_rate", sample_rate, above=0, integer=True)
        self.edge_p = checked_value(name, "edge_p", edge_p, at_least=0, at_most=1)
        self.threshold_db = checked_range(name, "threshold_db", threshold_db, above=0)
        self.silence_db = checked_value(name, "silence_db", silence_db, above=0)
        self.min_pause_s = checked_value(name, "min_pause_s", min_pause_s, above=0)
        self.frame_s = checked_value(name, "frame_s", frame_s, above=0)
        self.frame = max(1, round(self.frame_s * self.sample_rate))  # samples a frame
        self.pause_frames = max(1, round(self.min_pause_s / self.frame_s))  # the shortest gap that splits stretches
        self.max_stretches = max_stretches

    def distort(self, waveforms: torch.Tensor, lengths: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        levels = frame_levels_db(waveforms, self.frame).tolist()  # [B, frames], on the host
        frame_counts = (-(-lengths // self.frame)).tolist()
        draws = draws.reshape(draws.shape[0], self.max_stretches, 4).tolist()
        silenced = torch.zeros(waveforms.shape, dtype=torch.bool)
        for row, (utterance, count) in enumerate(zip(levels, frame_counts)):
            utterance = utterance[:count]
            for (first, last), (start_chance, start_depth, end_chance, end_depth) in zip(
                speech_stretches(utterance, self.silence_db, self.pause_frames), draws[row]
            ):
                peak = max(utterance[first:last + 1])  # (a NaN level matches no threshold: nothing is cut)
                if start_chance < self.edge_p:
                    threshold = peak - uniform_between(start_depth, self.threshold_db)
                    kept_from = next((index for index in range(first, last + 1) if utterance[index] >= threshold), first)
                    silenced[row, first * self.frame:kept_from * self.frame] = True
                if end_chance < self.edge_p:
                    threshold = peak - uniform_between(end_depth, self.threshold_db)
                    kept_to = next((index for index in range(last, first - 1, -1) if utterance[index] >= threshold), last)
                    silenced[row, (kept_to + 1) * self.frame:(last + 1) * self.frame] = True
        return waveforms.masked_fill(silenced.to(waveforms.device), 0.0)

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, p={self.p}, edge_p={self.edge_p}, threshold_db={list(self.threshold_db)}, "
                f"silence_db={self.silence_db}, min_pause_s={self.min_pause_s}, frame_s={self.frame_s}, "
                f"max_stretches={self.max_stretches}")


def frame_levels_db(waveforms: torch.Tensor, frame: int) -> torch.Tensor:
    """``[B, ceil(S / frame)]``: each frame's mean power in dB (-inf for digital silence); the
    last frame is padded with zeros, as the padding of a shorter utterance is."""
    padded = torch.nn.functional.pad(waveforms, (0, -waveforms.shape[-1] % frame))
    power = padded.reshape(waveforms.shape[0], -1, frame).square().mean(dim=-1)
    return 10.0 * torch.log10(power)


def speech_stretches(levels_db: list[float], silence_db: float, pause_frames: int) -> list[tuple[int, int]]:
    """``[(first frame, last frame)]`` of each stretch of speech: frames within ``silence_db`` of
    the loudest, joined across gaps shorter than ``pause_frames``.

    >>> speech_stretches([-90, 0, -30, 0, -90, -90, -90, 0], silence_db=50, pause_frames=2)
    [(1, 3), (7, 7)]
    """
    loudest = max(levels_db, default=-math.inf)
    if loudest == -math.inf:
        return []
    speech = [index for index, level in enumerate(levels_db) if level >= loudest - silence_db]
    stretches = [[speech[0], speech[0]]]
    for index in speech[1:]:
        if index - stretches[-1][1] - 1 < pause_frames:
            stretches[-1][1] = index
        else:
            stretches.append([index, index])
    return [(first, last) for first, last in stretches]
