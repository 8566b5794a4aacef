"""Decoding CTC posteriors: best path (greedy) and prefix beam search.

A CTC model emits one distribution over ``C`` classes per frame; class 0 is the blank. A frame
path collapses to a labelling by merging repeated classes and then dropping blanks, so
``a a - a`` gives ``a a`` (the blank separates the two a's) while ``a a a`` gives ``a``. The
probability of a labelling is the sum over every path that collapses to it.

- :func:`ctc_greedy` takes the most likely class of every frame (the best *path*). It is cheap
  and runs on every validation batch.
- :func:`ctc_prefix_beam_search` searches for the most likely *labelling*, summing over paths;
  it can beat the best path when probability mass is spread over several paths of one labelling.

Both return TOKEN ids (class - 1), blanks removed.

    >>> log_probs = torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]]).log()
    >>> ctc_greedy(log_probs[None], torch.tensor([4]))
    [[0, 0]]
    >>> [(tokens, round(score, 3)) for tokens, score in ctc_prefix_beam_search(log_probs, beam_size=2)[0]]
    [([0, 0], -0.669), ([0], -2.049)]
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import torch

__all__ = ["ctc_greedy", "ctc_prefix_beam_search"]

NEGATIVE_INFINITY = float("-inf")


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor | None = None) -> list[list[int]]:
    """Best-path decoding: the most likely class per frame, repeats merged, blanks dropped.

    ``log_probs [B, T, C]`` (logits work too: only the argmax matters); ``lengths [B]`` valid
    frames per utterance (None: all ``T``). Returns one list of token ids per utterance.

    The per-frame work is vectorized over the batch; the only host/device sync is one transfer
    of the kept classes at the end.

    >>> log_probs = torch.full((2, 5, 3), -5.0)
    >>> for utterance, path in enumerate([[1, 1, 0, 1, 2], [2, 2, 2, 1, 1]]):
    ...     log_probs[utterance, torch.arange(5), torch.tensor(path)] = 0.0
    >>> ctc_greedy(log_probs, torch.tensor([5, 3]))  # the second utterance stops after frame 3
    [[0, 0, 1], [1]]
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be [B, T, C], got shape {tuple(log_probs.shape)}")
    frames = log_probs.shape[1]
    best = log_probs.argmax(dim=-1)  # [B, T]
    # A frame starts a new label when its class is not blank and differs from the previous
    # frame's class (the previous class may be a blank: that is what separates repeats).
    previous = torch.nn.functional.pad(best[:, :-1], (1, 0), value=-1)  # [B, T]
    keep = (best != 0) & (best != previous)  # [B, T]
    if lengths is not None:
        time = torch.arange(frames, device=best.device)
        keep &= time[None, :] < lengths.to(best.device)[:, None]
    counts = keep.sum(dim=1)  # [B]
    tokens = best[keep] - 1  # [total kept], utterance by utterance (row-major order)
    # Host/device sync: one transfer for everything.
    flat_tokens = tokens.tolist()
    hypotheses: list[list[int]] = []
    start = 0
    for count in counts.tolist():
        hypotheses.append(flat_tokens[start : start + count])
        start += count
    return hypotheses


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor | Sequence[int] | None = None,
    beam_size: int = 8,
    top_k: int | None = None,
    prune_threshold: float | None = None,
) -> list[list[tuple[list[int], float]]]:
    """The most likely labellings under CTC posteriors, by prefix beam search in log space.

    ``log_probs`` is ``[B, T, C]`` log-softmax output, or ``[T, C]`` for one utterance (treated
    as a batch of one, so the result is always one n-best list per utterance). ``lengths [B]``
    limits each utterance to its valid frames (None: all ``T``).

    Each n-best list holds up to ``beam_size`` pairs ``(tokens, log_probability)``, best first,
    where ``log_probability`` is the log of the summed probability of every path collapsing to
    ``tokens`` (exactly so while no prefix has been pruned away).

    Per frame, a prefix can (a) stay unchanged through a blank, (b) stay unchanged by repeating
    its last class, or (c) grow by one class. Growth only considers the frame's ``top_k``
    non-blank classes (None: ``beam_size``), and of those only the ones with log-probability
    >= ``prune_threshold`` when given; (a) and (b) are always counted. Pass ``top_k=C - 1`` and no
    threshold for an unpruned search.

    Complexity per utterance: ``O(T * beam_size * top_k)`` prefix updates plus a top-``beam_size``
    selection among those candidates each frame, each update copying a prefix of length ``<= U``;
    memory ``O(beam_size * top_k * U)``. The frame loop runs in Python on the CPU (one
    transfer per utterance), which suits the small beams of evaluation, not training.

    >>> log_probs = torch.tensor([[0.4, 0.35, 0.25], [0.4, 0.35, 0.25]]).log()
    >>> ctc_greedy(log_probs[None])  # best path: blank, blank
    [[]]
    >>> best_tokens, best_score = ctc_prefix_beam_search(log_probs, beam_size=4)[0][0]
    >>> best_tokens, round(math.exp(best_score), 4)  # "a" sums a-a, a-blank, blank-a
    ([0], 0.4025)
    """
    if log_probs.dim() == 2:
        log_probs = log_probs[None]
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be [B, T, C] or [T, C], got shape {tuple(log_probs.shape)}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    batch_size, frames, classes = log_probs.shape
    if lengths is None:
        lengths = [frames] * batch_size
    elif isinstance(lengths, torch.Tensor):
        lengths = lengths.tolist()
    candidates_per_frame = min(beam_size if top_k is None else top_k, classes - 1)
    results = []
    for utterance in range(batch_size):
        # Host/device sync: this utterance's valid frames move to the CPU once, in float64.
        utterance_log_probs = log_probs[utterance, : int(lengths[utterance])].detach().to("cpu", torch.float64)
        results.append(_prefix_beam_search_one(utterance_log_probs, beam_size, candidates_per_frame, prune_threshold))
    return results


def _log_add(first: float, second: float) -> float:
    """log(exp(first) + exp(second)), exact at -inf."""
    if first == NEGATIVE_INFINITY:
        return second
    if second == NEGATIVE_INFINITY:
        return first
    if first < second:
        first, second = second, first
    return first + math.log1p(math.exp(second - first))


def _prefix_beam_search_one(
    log_probs: torch.Tensor, beam_size: int, candidates_per_frame: int, prune_threshold: float | None
) -> list[tuple[list[int], float]]:
    """Prefix beam search of one utterance: ``log_probs [T, C]`` float64 on the CPU."""
    frames_list = log_probs.tolist()  # [T][C]
    if candidates_per_frame > 0:
        top_values, top_indices = log_probs[:, 1:].topk(candidates_per_frame, dim=1)  # [T, k] each
        top_values, top_classes = top_values.tolist(), (top_indices + 1).tolist()
    else:
        top_values = top_classes = [[] for _ in frames_list]
    # prefix (tuple of classes) -> [log p(paths so far end in blank), log p(they end in a class)]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEGATIVE_INFINITY]}
    for frame, frame_values, frame_classes in zip(frames_list, top_values, top_classes):
        blank = frame[0]
        extensions = [
            (label, value)
            for label, value in zip(frame_classes, frame_values)
            if prune_threshold is None or value >= prune_threshold
        ]
        next_beams: dict[tuple[int, ...], list[float]] = {}
        for prefix, (ends_in_blank, ends_in_label) in beams.items():
            total = _log_add(ends_in_blank, ends_in_label)
            entry = next_beams.setdefault(prefix, [NEGATIVE_INFINITY, NEGATIVE_INFINITY])
            entry[0] = _log_add(entry[0], total + blank)  # (a) a blank: the prefix is unchanged
            last = prefix[-1] if prefix else None
            if last is not None:  # (b) the last class again, with no blank between: merged
                entry[1] = _log_add(entry[1], ends_in_label + frame[last])
            for label, value in extensions:  # (c) a new label
                grown = next_beams.setdefault(prefix + (label,), [NEGATIVE_INFINITY, NEGATIVE_INFINITY])
                # Repeating the last label starts a new one only after a blank.
                source = ends_in_blank if label == last else total
                grown[1] = _log_add(grown[1], source + value)
        beams = dict(
            heapq.nlargest(beam_size, next_beams.items(), key=lambda item: _log_add(item[1][0], item[1][1]))
        )
    ranked = sorted(
        ((prefix, _log_add(*scores)) for prefix, scores in beams.items()), key=lambda item: item[1], reverse=True
    )
    return [([label - 1 for label in prefix], score) for prefix, score in ranked]
