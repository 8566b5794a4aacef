"""Decoding attention (encoder-decoder) models: greedy and beam search, optionally joint with CTC.

Both searches drive any decoder with the AttentionDecoder protocol of
:mod:`cadence.models.seq2seq` (``initial_state`` once, then ``step`` per output class) and return
TOKEN ids (class - 1); class 0 is <sos> as the first input and <eos> as an output.

Maximum length. A hypothesis holds at most ``max_length`` tokens, then <eos> is forced. By
default the limit is per utterance, ``ceil(max_length_ratio * memory_length)`` with
``max_length_ratio = 2.0``: generous, because a limit that is too short silently cuts
transcripts while one that is too long only costs time when a model fails to emit <eos>
(character targets over a memory downsampled 8 times can need more than one token per memory
frame). Pass ``max_length`` to use one limit for every utterance.

Beam search scores a hypothesis h = (c_1 .. c_n, <eos>) by

    score(h) = (1 - ctc_weight) * log p_attention(h) + ctc_weight * log p_ctc(h)

where ``log p_ctc`` is the CTC prefix probability while h grows and the CTC probability of the
whole labelling once <eos> ends it (:mod:`cadence.decoding.joint`). Finished hypotheses are
ranked by ``score / (n + 1) ** length_penalty`` (n tokens plus the <eos>, so the empty
hypothesis divides by 1): 0 ranks by the plain log-probability, which favours short
hypotheses; values around 0.5 to 1 counter that. The search itself (which hypotheses survive a
step) uses the plain scores.

A toy decoder that prefers token 1 first and then <eos>, whatever the memory:

    >>> class Toy:
    ...     def initial_state(self, memory, memory_lengths):
    ...         return {"step": torch.zeros(memory.shape[0], dtype=torch.int64)}
    ...     def step(self, previous_classes, state):
    ...         table = torch.tensor([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1], [0.9, 0.05, 0.05]])
    ...         logits = table[state["step"].clamp(max=2)].log()
    ...         return logits, {"step": state["step"] + 1}
    >>> memory, memory_lengths = torch.zeros(2, 3, 4), torch.tensor([3, 1])
    >>> attention_greedy(Toy(), memory, memory_lengths)
    [[1], [1]]
    >>> [(tokens, round(score, 3)) for tokens, score in attention_beam_search(Toy(), memory, memory_lengths, 2)[0]]
    [([1], -0.58), ([0], -1.833)]
"""

from __future__ import annotations

import math

import torch

from cadence.decoding.joint import CTCPrefixScorer
from cadence.models.seq2seq import AttentionDecoder, select_state

__all__ = ["DEFAULT_MAX_LENGTH_RATIO", "attention_beam_search", "attention_greedy", "maximum_lengths"]

#: Default token limit per memory frame (see the module docstring).
DEFAULT_MAX_LENGTH_RATIO = 2.0

NEGATIVE_INFINITY = float("-inf")


def maximum_lengths(
    memory_lengths: torch.Tensor, max_length: int | None = None, max_length_ratio: float = DEFAULT_MAX_LENGTH_RATIO
) -> torch.Tensor:
    """Tokens allowed per utterance ``[B]`` int64: ``max_length`` for all, or else
    ``ceil(max_length_ratio * memory_length)`` (at least 1).

    >>> maximum_lengths(torch.tensor([10, 3])).tolist(), maximum_lengths(torch.tensor([10, 3]), 4).tolist()
    ([20, 6], [4, 4])
    """
    if max_length is not None:
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        return torch.full_like(memory_lengths, max_length, dtype=torch.int64)
    return torch.ceil(memory_lengths.to(torch.float64) * max_length_ratio).to(torch.int64).clamp(min=1)


@torch.no_grad()
def attention_greedy(
    decoder: AttentionDecoder,
    memory: torch.Tensor,
    memory_lengths: torch.Tensor,
    max_length: int | None = None,
    max_length_ratio: float = DEFAULT_MAX_LENGTH_RATIO,
) -> list[list[int]]:
    """The most likely class at every step, for the whole batch at once, until each utterance
    emits <eos> or reaches its token limit (:func:`maximum_lengths`).

    ``memory [B, S, D]``, ``memory_lengths [B]`` -> one list of token ids per utterance. Finished
    utterances stay in the decoder batch (their outputs are ignored) so no state is reordered.
    """
    batch_size = memory.shape[0]
    limits = maximum_lengths(memory_lengths, max_length, max_length_ratio).to(memory.device)  # [B]
    state = decoder.initial_state(memory, memory_lengths)
    previous = torch.zeros(batch_size, dtype=torch.int64, device=memory.device)  # <sos>
    finished = limits == 0  # [B]
    emitted = []  # per step [B], 0 once an utterance has finished
    position = 0
    while not bool(finished.all()):  # host/device sync, once per step
        logits, state = decoder.step(previous, state)  # [B, C]
        best = logits.argmax(dim=-1)  # [B]
        emitted.append(best.masked_fill(finished, 0))
        position += 1
        finished = finished | (best == 0) | (position >= limits)
        previous = best
    if not emitted:
        return [[] for _ in range(batch_size)]
    classes = torch.stack(emitted, dim=1).tolist()  # [B, steps]; host/device sync
    # Each row holds its classes up to its first 0 and zeros only after it.
    return [[label - 1 for label in row if label != 0] for row in classes]


@torch.no_grad()
def attention_beam_search(
    decoder: AttentionDecoder,
    memory: torch.Tensor,
    memory_lengths: torch.Tensor,
    beam_size: int = 4,
    max_length: int | None = None,
    max_length_ratio: float = DEFAULT_MAX_LENGTH_RATIO,
    length_penalty: float = 0.0,
    ctc_log_probs: torch.Tensor | None = None,
    ctc_lengths: torch.Tensor | None = None,
    ctc_weight: float = 0.0,
    ctc_candidates: int | None = None,
) -> list[list[tuple[list[int], float]]]:
    """Beam search over the whole batch: ``B * beam_size`` hypotheses per ``decoder.step`` call.

    Returns, per utterance, up to ``beam_size`` pairs ``(tokens, score)``, best first, with the
    length-normalised score of the module docstring.

    Each step, every live hypothesis proposes its continuations (every class; with CTC, <eos> and
    its ``ctc_candidates`` best classes under attention, default ``ceil(1.5 * beam_size)``, since
    CTC scores cost ``O(T)`` each). The ``2 * beam_size`` best proposals of an utterance are
    ranked: <eos> proposals within the first ``beam_size`` finish their hypothesis, and the first
    ``beam_size`` other proposals form the next beam. So ``beam_size=1`` with
    ``length_penalty=0`` is greedy decoding. An utterance stops at its token limit, or once it
    has ``beam_size`` finished hypotheses and no live one can still beat the worst of them
    (scores only fall as hypotheses grow; the bound accounts for the length penalty).

    Joint CTC/attention: ``ctc_log_probs [B, T, C]`` log-posteriors of a CTC head over the same
    utterances (``ctc_lengths [B]``, default ``memory_lengths``), mixed in with ``ctc_weight``.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be within [0, 1], got {ctc_weight}")
    if ctc_candidates is not None and ctc_candidates < 1:
        raise ValueError(f"ctc_candidates must be at least 1, got {ctc_candidates}")
    use_ctc = ctc_weight > 0.0
    if use_ctc and ctc_log_probs is None:
        raise ValueError("ctc_weight > 0 needs ctc_log_probs")
    device = memory.device
    batch_size, rows = memory.shape[0], memory.shape[0] * beam_size
    limits = maximum_lengths(memory_lengths, max_length, max_length_ratio).to(device)  # [B]
    limit_list = limits.tolist()
    row_utterance = torch.arange(batch_size, device=device).repeat_interleave(beam_size)  # [N]
    state = select_state(decoder.initial_state(memory, memory_lengths), row_utterance)
    # Only the first hypothesis of each utterance is live at first: the others would copy it.
    scores = torch.full((batch_size, beam_size), NEGATIVE_INFINITY, dtype=torch.float64, device=device)
    scores[:, 0] = 0.0
    scores = scores.view(rows)  # [N] combined scores, the search's ranking
    attention_scores = torch.zeros(rows, dtype=torch.float64, device=device)  # [N] log p_attention
    history = torch.zeros(rows, 0, dtype=torch.int64, device=device)  # [N, position]
    previous = torch.zeros(rows, dtype=torch.int64, device=device)  # <sos>
    if use_ctc:
        lengths = memory_lengths if ctc_lengths is None else ctc_lengths
        scorer = CTCPrefixScorer(ctc_log_probs.to(device), lengths.to(device))
        ctc_state = scorer.initial_state(row_utterance)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch_size)]  # (normalised score, classes)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    utterance_offsets = torch.arange(batch_size, device=device)[:, None] * beam_size  # [B, 1]

    for position in range(max(limit_list) + 1):
        logits, state = decoder.step(previous, state)  # [N, C]
        log_probs = torch.log_softmax(logits.to(torch.float64), dim=-1)  # [N, C]
        classes = log_probs.shape[1]
        if use_ctc:
            count = min(classes - 1, math.ceil(1.5 * beam_size) if ctc_candidates is None else ctc_candidates)
            proposals = log_probs[:, 1:].topk(count, dim=1).indices + 1  # [N, M]
            candidate_classes = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)  # [N, 1 + M]
            candidate_attention = attention_scores[:, None] + log_probs.gather(1, candidate_classes)
            candidate_ctc = torch.cat(
                [scorer.full_sequence_score(ctc_state)[:, None], scorer.score(ctc_state, proposals)], dim=1
            )
            candidate_scores = ctc_weight * candidate_ctc
            if ctc_weight < 1.0:  # never 0 * -inf
                candidate_scores = candidate_scores + (1.0 - ctc_weight) * candidate_attention
        else:
            candidate_classes = torch.arange(classes, device=device).expand(rows, classes)  # [N, C]
            candidate_attention = attention_scores[:, None] + log_probs
            candidate_scores = candidate_attention
        live = torch.isfinite(scores) & ~done[row_utterance]  # [N]
        candidate_scores = candidate_scores.masked_fill(~live[:, None], NEGATIVE_INFINITY)
        at_limit = (position >= limits)[row_utterance]  # [N]: only <eos> may follow
        candidate_scores[:, 1:] = candidate_scores[:, 1:].masked_fill(at_limit[:, None], NEGATIVE_INFINITY)

        width = candidate_scores.shape[1]
        # Each hypothesis proposes one <eos> at most, so the 2K best hold K other proposals.
        top_scores, top_positions = candidate_scores.view(batch_size, -1).topk(2 * beam_size, dim=1)  # [B, 2K]
        top_rows = utterance_offsets + top_positions // width  # [B, 2K] source hypotheses
        top_classes = candidate_classes.reshape(batch_size, -1).gather(1, top_positions)  # [B, 2K]
        ends = top_classes == 0  # [B, 2K]
        _collect_finished(finished, history, ends, top_scores, top_rows, live, beam_size, length_penalty)

        # The next beam: the first K proposals that are not <eos>, in rank order.
        continuing = torch.sort(ends.to(torch.int8), dim=1, stable=True).indices[:, :beam_size]  # [B, K]
        source_rows = top_rows.gather(1, continuing).view(rows)  # [N]
        columns = (top_positions.gather(1, continuing) % width).view(rows)  # [N]
        scores = top_scores.gather(1, continuing).view(rows)
        new_classes = candidate_classes[source_rows, columns]  # [N], never <eos>
        attention_scores = candidate_attention[source_rows, columns]
        state = select_state(state, source_rows)
        history = torch.cat([history.index_select(0, source_rows), new_classes[:, None]], dim=1)
        if use_ctc:
            ctc_state = scorer.extend(select_state(ctc_state, source_rows), new_classes)
        previous = new_classes

        done = done | _should_stop(finished, scores.view(batch_size, beam_size), limits, position, length_penalty)
        if bool(done.all()):  # host/device sync, once per step
            break

    return [[([label - 1 for label in labels], score) for score, labels in utterance] for utterance in finished]


def _collect_finished(
    finished: list[list[tuple[float, list[int]]]],
    history: torch.Tensor,
    ends: torch.Tensor,
    top_scores: torch.Tensor,
    top_rows: torch.Tensor,
    live: torch.Tensor,
    beam_size: int,
    length_penalty: float,
) -> None:
    """Move the <eos> proposals ranked within the first ``beam_size`` of live hypotheses into
    ``finished`` (kept sorted, at most ``beam_size`` per utterance)."""
    ending = ends[:, :beam_size] & live[top_rows[:, :beam_size]]  # [B, K]
    if not bool(ending.any()):  # host/device sync
        return
    utterances, ranks = ending.nonzero(as_tuple=True)
    rows = top_rows[utterances, ranks]
    hypotheses = history.index_select(0, rows).tolist()
    for utterance, score, labels in zip(utterances.tolist(), top_scores[utterances, ranks].tolist(), hypotheses):
        normalised = score / (len(labels) + 1) ** length_penalty
        finished[utterance].append((normalised, labels))
        finished[utterance].sort(key=lambda item: item[0], reverse=True)
        del finished[utterance][beam_size:]


def _should_stop(
    finished: list[list[tuple[float, list[int]]]],
    beam_scores: torch.Tensor,
    limits: torch.Tensor,
    position: int,
    length_penalty: float,
) -> torch.Tensor:
    """Which utterances are decided after the step at ``position`` -> ``[B]`` bool.

    ``beam_scores [B, K]`` are the live hypotheses' combined scores. A live hypothesis finishes
    with a score at most its current one (every added term is a log-probability) and at most
    ``limit + 1`` classes, so with a negative score its normalised score is at most
    ``score / (limit + 1) ** length_penalty``.
    """
    best_live = beam_scores.max(dim=1).values.tolist()  # host/device sync
    decided = []
    for utterance, limit in enumerate(limits.tolist()):
        beam = finished[utterance]
        if position >= limit or best_live[utterance] == NEGATIVE_INFINITY:
            decided.append(True)
            continue
        if len(beam) < beam_scores.shape[1]:
            decided.append(False)
            continue
        bound = best_live[utterance]
        if bound < 0:
            bound /= (limit + 1) ** length_penalty
        decided.append(bound <= beam[-1][0])
    return torch.tensor(decided, device=beam_scores.device)
