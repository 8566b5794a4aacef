"""CTC forced alignment: the single best frame path of a KNOWN labelling, and word times from it.

Where the decoders of :mod:`cadence.decoding.ctc` search for the labelling, forced alignment
is given it (the reference transcript) and asks *when* each token was emitted. It runs
Viterbi over the standard CTC topology: the targets ``y1 .. yU`` interleaved with blanks,
``- y1 - y2 - ... - yU -``; a path starts in the first blank or ``y1``, ends in ``yU`` or the
last blank, and at every frame stays, moves one state on, or skips a blank between two
DIFFERENT labels (two equal labels need a blank between them, else they would merge). Of
all such paths it returns the one with the largest sum of frame log-probabilities.

Frames are the model's OUTPUT frames (after any time subsampling); frame ``t``'s time is
``t * seconds_per_frame``, the centre of what it sees (cadence's features centre frame ``i``
on sample ``i * hop_length``, and DeepSpeech2's "same" convolutions keep output frame ``t`` on
input frame ``t * time_stride``), so ``seconds_per_frame = time_stride * hop_length /
sample_rate``. A frame covers half a frame either side of its time: a token spanning frames
``first..last`` lasts from ``(first - 1/2)`` to ``(last + 1/2) * seconds_per_frame``.
Targets and ``blank`` are COLUMNS of ``log_probs``: for cadence's models, the model classes
(token id + 1, blank 0).

    >>> log_probs = torch.tensor([[0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]]).log()
    >>> alignment = force_align(log_probs, [1, 1, 2])  # the only path that fits: 1 - 1 2
    >>> alignment.path, alignment.spans
    ([1, 0, 1, 2], [(0, 0), (2, 2), (3, 3)])
    >>> force_align(log_probs, [2]).path  # greedy says 1 - 1 2; forced: one 2 where it fits best
    [0, 0, 0, 2]
    >>> spans_to_seconds(alignment.spans, seconds_per_frame=0.25)  # the first starts at 0, not -1/8
    [(0.0, 0.125), (0.375, 0.625), (0.625, 0.875)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Alignment", "BoundaryScore", "force_align", "force_align_batch", "score_word_boundaries", "spans_to_seconds",
]


@dataclass(frozen=True)
class Alignment:
    """The best path of one utterance.

    ``path``: the class of every output frame (a target or the blank). ``spans``: for each
    target token, its ``(first, last)`` frame, both inclusive. ``score``: the path's summed
    log-probability.
    """

    path: list[int]
    spans: list[tuple[int, int]]
    score: float


def _as_list(targets: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(targets, torch.Tensor):
        if targets.dim() != 1:
            raise ValueError(f"targets must be 1-D, got shape {tuple(targets.shape)}")
        return [int(target) for target in targets.tolist()]
    return [int(target) for target in targets]


def force_align(log_probs: torch.Tensor, targets: Sequence[int] | torch.Tensor, blank: int = 0) -> Alignment:
    """The best CTC path of ``log_probs [T, C]`` that collapses to ``targets`` (see the module docstring).

    Raises ValueError when ``T`` is shorter than the targets need (one frame per token plus one
    blank between each pair of equal neighbours), when a target is the blank or out of range,
    when ``log_probs`` holds NaN, or when every valid path crosses a ``-inf`` entry.
    Empty targets give the all-blank path.
    """
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be [T, C], got shape {tuple(log_probs.shape)}")
    frames, classes = log_probs.shape
    labels = _as_list(targets)
    if not 0 <= blank < classes:
        raise ValueError(f"blank {blank} is not a class of log_probs (C = {classes})")
    for label in labels:
        if label == blank or not 0 <= label < classes:
            raise ValueError(f"target {label} must be a non-blank class in 0..{classes - 1} (blank = {blank})")
    repeats = sum(1 for previous, label in zip(labels, labels[1:]) if previous == label)
    if frames < len(labels) + repeats:
        raise ValueError(
            f"{frames} frames cannot hold {len(labels)} targets: a CTC path needs len(targets) + repeats = "
            f"{len(labels)} + {repeats} = {len(labels) + repeats} frames (a blank between equal neighbours)"
        )
    emissions = log_probs.detach().to("cpu", torch.float64).numpy()  # host sync: one copy
    if np.isnan(emissions).any():
        raise ValueError("log_probs holds NaN")

    # The extended labelling - y1 - y2 ... - yU -: state s is a label when s is odd.
    states = np.full(2 * len(labels) + 1, blank, dtype=np.int64)
    states[1::2] = labels
    state_count = states.size
    # A label state may be entered from two states back (skipping the blank) unless that
    # state holds the same label: then the blank between them is what keeps them apart.
    may_skip = np.zeros(state_count, dtype=bool)
    may_skip[3::2] = states[3::2] != states[1:-2:2]
    # Every frame's emission for every state, gathered once for all frames (vectorised over
    # time); the recursion itself is sequential in time and vectorised over the states.
    emitted = emissions[:, states]  # [T, S]

    # Before frame 0 the path sits "before" state 0 with score 0: staying in state 0 or moving
    # on to state 1 then gives exactly CTC's two allowed starts, with no special first frame.
    score = np.full(state_count, -np.inf)
    score[0] = 0.0
    moves = np.zeros((frames, state_count), dtype=np.int8)  # [T, S] how far back each best step came from
    candidates = np.full((3, state_count), -np.inf)  # [stay, one on, skip a blank]
    for frame in range(frames):
        candidates[0] = score
        candidates[1, 1:] = score[:-1]
        candidates[2, 2:] = np.where(may_skip[2:], score[:-2], -np.inf)
        move = candidates.argmax(axis=0)  # ties: the smallest move, so the result is deterministic
        moves[frame] = move
        score = candidates[move, np.arange(state_count)] + emitted[frame]

    # A path ends in the last label or in the final blank.
    final = state_count - 1 if state_count == 1 or score[-1] >= score[-2] else state_count - 2
    if not np.isfinite(score[final]):
        raise ValueError("every CTC path of these targets crosses a -inf log-probability: no alignment is possible")
    state_path = np.empty(frames, dtype=np.int64)
    state = final
    for frame in range(frames - 1, -1, -1):
        state_path[frame] = state
        state -= int(moves[frame, state])

    path = states[state_path].tolist()
    spans: list[tuple[int, int]] = []
    for token in range(len(labels)):
        occupied = np.flatnonzero(state_path == 2 * token + 1)  # contiguous: a state is left for good
        spans.append((int(occupied[0]), int(occupied[-1])))
    return Alignment(path=path, spans=spans, score=float(score[final]))


def force_align_batch(
    log_probs: torch.Tensor,
    output_lengths: torch.Tensor | Sequence[int],
    targets: Sequence[Sequence[int]],
    blank: int = 0,
) -> list[Alignment]:
    """:func:`force_align` of every utterance of ``log_probs [B, T, C]``, each cut to its
    ``output_lengths[b]`` valid frames.

    >>> frames = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.3, 0.1, 0.6]]).log()  # [T = 3, C = 3]
    >>> log_probs = torch.stack([frames, frames])
    >>> [alignment.path for alignment in force_align_batch(log_probs, [3, 2], [[1, 2], [2]])]
    [[1, 0, 2], [0, 2]]
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be [B, T, C], got shape {tuple(log_probs.shape)}")
    lengths = output_lengths.tolist() if isinstance(output_lengths, torch.Tensor) else list(output_lengths)
    if not len(lengths) == len(targets) == log_probs.shape[0]:
        raise ValueError(
            f"{log_probs.shape[0]} utterances in log_probs, {len(lengths)} output lengths, {len(targets)} target lists"
        )
    return [force_align(log_probs[index, : int(length)], labels, blank)
            for index, (length, labels) in enumerate(zip(lengths, targets))]


def spans_to_seconds(spans: Sequence[tuple[int, int]], seconds_per_frame: float) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of each ``(first, last)`` frame span: from half a frame before
    ``first``'s time to half a frame after ``last``'s (see the module docstring), never before 0.

    >>> spans_to_seconds([(0, 1), (5, 5)], 0.5)
    [(0.0, 0.75), (2.25, 2.75)]
    """
    return [(max(0.0, (first - 0.5) * seconds_per_frame), (last + 0.5) * seconds_per_frame) for first, last in spans]


@dataclass(frozen=True)
class BoundaryScore:
    """Where an utterance's aligned word boundaries fall.

    ``inside[k]``: whether the boundary between words ``k`` and ``k + 1`` lies where it should.
    ``word_inside[k]``: whether both boundaries of word ``k`` do (a word with none: True).
    ``boundaries_inside`` and ``boundaries``: counts to sum over a corpus.
    """

    inside: list[bool]
    word_inside: list[bool]
    boundaries_inside: int
    boundaries: int


def score_word_boundaries(
    segments: Sequence[dict | tuple[int, int]],
    word_spans: Sequence[tuple[float, float]],
    seconds_per_frame: float,
    sample_rate: int = 8000,
) -> BoundaryScore:
    """Check aligned word boundaries against where the recordings were joined (connected digits).

    ``segments``: each word's recording as ``[start, end)`` in samples at ``sample_rate``
    (``{"start", "end"}`` dicts, as in ``segments/<split>.jsonl``, or pairs), in word order.
    ``word_spans``: each word's aligned ``(start, end)`` in seconds (:func:`spans_to_seconds`).

    The aligned boundary between words ``k`` and ``k + 1`` is the middle of the gap between
    word ``k``'s end and word ``k + 1``'s start (CTC puts blanks there; neither word owns them).
    It is inside when it lies in the silence from recording ``k``'s end to recording
    ``k + 1``'s start, widened by a tolerance of ONE OUTPUT FRAME (``seconds_per_frame``) on
    each side, since a boundary can be known no finer than a frame.

    >>> score = score_word_boundaries([(0, 800), (1600, 2400), (3200, 4000)],
    ...                               [(0.0, 0.08), (0.12, 0.2), (0.2, 0.5)], seconds_per_frame=0.04)
    >>> score.inside, score.word_inside, score.boundaries_inside, score.boundaries
    ([True, False], [True, False, False], 1, 2)
    """
    if len(segments) != len(word_spans):
        raise ValueError(f"{len(segments)} segments for {len(word_spans)} aligned words: they must match one to one")
    recordings = [(segment["start"], segment["end"]) if isinstance(segment, dict) else tuple(segment) for segment in segments]
    inside = []
    for word in range(len(recordings) - 1):
        boundary = (word_spans[word][1] + word_spans[word + 1][0]) / 2
        silence_from = recordings[word][1] / sample_rate - seconds_per_frame
        silence_to = recordings[word + 1][0] / sample_rate + seconds_per_frame
        inside.append(bool(silence_from <= boundary <= silence_to))
    last = len(inside)
    word_inside = [(word == 0 or inside[word - 1]) and (word == last or inside[word]) for word in range(len(recordings))]
    return BoundaryScore(inside=inside, word_inside=word_inside, boundaries_inside=sum(inside), boundaries=len(inside))
