"""CTC prefix scores, for joint CTC/attention beam search (Watanabe et al. 2017).

An attention decoder proposes hypotheses one class at a time; a CTC head on the same encoder
can judge them, which penalises hypotheses that skip or repeat words. The judgement a growing
hypothesis needs is the CTC *prefix probability*

    psi(h) = P(the CTC labelling of the utterance starts with h)

and, once <eos> ends the hypothesis, the full-sequence probability ``P(labelling = h)``.
The beam score is then ``(1 - weight) * log p_attention(h) + weight * log psi(h)``.

The math (written here from the definitions; frames t = 1..T, ``x_t(c)`` the CTC posterior of
class c at frame t, ``x_t(blank)`` the blank's). For a prefix g keep two forward variables per
frame:

    n_t(g) = P(frames 1..t collapse to g, frame t is g's last class)
    b_t(g) = P(frames 1..t collapse to g, frame t is a blank)

with a virtual frame 0 where the empty prefix has ``b_0 = 1, n_0 = 0`` (every other prefix has
0 at frame 0). To grow g by a class c, the paths of g that may be followed by a *new* c are

    phi_t(g, c) = b_t(g) + (n_t(g) if c != last(g) else 0)     (a repeat needs a blank between)

and, summing over the frame t where that new c is first emitted (anything may follow it):

    psi(g + c)    = sum_{t=1..T} phi_{t-1}(g, c) * x_t(c)
    n_t(g + c)    = (n_{t-1}(g + c) + phi_{t-1}(g, c)) * x_t(c)
    b_t(g + c)    = (b_{t-1}(g + c) + n_{t-1}(g + c)) * x_t(blank)
    P(labelling = g) = n_T(g) + b_T(g)                          (the <eos> score)

Everything is in log space, in float64. Scoring candidates needs no loop over frames (one
log-sum-exp over t); growing a prefix unrolls both recursions into cumulative sums:

    log n_t(h) = C_t + logcumsumexp_{s<=t}(log phi_{s-1} - C_{s-1}),   C_t = sum_{s<=t} log x_s(c)
    log b_t(h) = D_t + logcumsumexp_{s<=t}(log n_{s-1}(h) - D_{s-1}),  D_t = sum_{s<=t} log x_s(blank)

so a decoder step costs a few ``[N, T]`` tensor operations instead of ``T`` small ones. The
subtraction is safe because log-probabilities are floored at ``floor`` (finite cumulative sums),
and float64 keeps the rounding of ``C_t - C_{s-1}`` far below what ranking needs.

    >>> log_probs = torch.tensor([[0.4, 0.35, 0.25], [0.4, 0.35, 0.25]]).log()  # T=2, blank a b
    >>> round(math.exp(ctc_prefix_log_probability(log_probs, [1])), 4)  # labellings "a" and "a b"
    0.49
    >>> round(math.exp(ctc_prefix_log_probability(log_probs, [1], complete=True)), 4)  # just "a"
    0.4025
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["CTCPrefixScorer", "ctc_prefix_log_probability"]

NEGATIVE_INFINITY = float("-inf")


class CTCPrefixScorer:
    """Incremental CTC prefix scores of many hypotheses over a batch of utterances.

    ``log_probs [B, T, C]`` are CTC log-posteriors (class 0 = blank), ``lengths [B]`` valid frames.
    A hypothesis state is a ``dict[str, Tensor]`` with the hypothesis on dim 0 (so a decoder
    state's :func:`~cadence.models.seq2seq.select_state` reorders it too):

    - ``utterance [N]``: which utterance of the batch the hypothesis decodes,
    - ``last_class [N]``: its last class (0 while empty),
    - ``log_label [N, T + 1]`` and ``log_blank [N, T + 1]``: ``log n_t`` and ``log b_t`` of the
      module docstring, for t = 0 (virtual) .. T.

    Classes here are model classes (token + 1); candidates must be non-blank.

    >>> log_probs = torch.tensor([[[0.4, 0.35, 0.25], [0.4, 0.35, 0.25]]]).log()
    >>> scorer = CTCPrefixScorer(log_probs, torch.tensor([2]))
    >>> empty = scorer.initial_state(torch.tensor([0]))
    >>> scorer.score(empty, torch.tensor([[1, 2]])).exp()  # P(starts with "a"), P(starts with "b")
    tensor([[0.4900, 0.3500]], dtype=torch.float64)
    >>> after_a = scorer.extend(empty, torch.tensor([1]))
    >>> scorer.full_sequence_score(after_a).exp()  # P(labelling is exactly "a")
    tensor([0.4025], dtype=torch.float64)
    """

    def __init__(self, log_probs: torch.Tensor, lengths: torch.Tensor, floor: float = -1000.0):
        # Log-probabilities are clamped at ``floor`` (exp(-1000) is 0 in float64 anyway) so the
        # cumulative sums of ``extend`` stay finite; impossible prefixes still score -inf.
        if log_probs.dim() != 3:
            raise ValueError(f"log_probs must be [B, T, C], got shape {tuple(log_probs.shape)}")
        batch_size, frames, _ = log_probs.shape
        self.frames = frames
        self.lengths = lengths.to(log_probs.device, torch.int64)  # [B]
        # Frames past an utterance's length are never read for its scores (sums stop at its
        # length); they become certain blanks anyway so every value computed from them is finite.
        valid = torch.arange(frames, device=log_probs.device)[None, :] < self.lengths[:, None]  # [B, T]
        values = log_probs.detach().to(torch.float64).clamp(min=floor)
        padding = torch.full_like(values, floor)
        padding[..., 0] = 0.0
        values = torch.where(valid[..., None], values, padding)
        self.log_probs_by_class = values.transpose(1, 2).contiguous()  # [B, C, T]
        # frame t = 1..T of the module docstring is column t - 1 here; column 0 of a [., T + 1]
        # tensor is the virtual frame 0.
        self.frame_is_valid = valid  # [B, T]
        blank_cumulative = values[..., 0].cumsum(dim=1)  # [B, T]
        self.blank_cumulative = torch.nn.functional.pad(blank_cumulative, (1, 0))  # [B, T + 1]: D_0..D_T

    def initial_state(self, utterance: torch.Tensor) -> dict[str, torch.Tensor]:
        """The empty prefix, for hypotheses ``utterance [N]`` (indices into the batch)."""
        utterance = utterance.to(self.lengths.device, torch.int64)
        count = utterance.shape[0]
        shape = (count, self.frames + 1)
        log_label = torch.full(shape, NEGATIVE_INFINITY, dtype=torch.float64, device=utterance.device)  # n_t = 0
        log_blank = self.blank_cumulative.index_select(0, utterance)  # b_0 = 1, b_t = all blanks up to t
        last_class = torch.zeros(count, dtype=torch.int64, device=utterance.device)
        return {"utterance": utterance, "last_class": last_class, "log_label": log_label, "log_blank": log_blank}

    def score(self, state: dict[str, torch.Tensor], candidate_classes: torch.Tensor) -> torch.Tensor:
        """``log psi(g + c)`` for every hypothesis g and each of its ``candidate_classes [N, M]``
        (non-blank) -> ``[N, M]`` float64. Costs ``O(N * M * T)``, no loop over frames."""
        utterance = state["utterance"]
        observed = self.log_probs_by_class[utterance[:, None], candidate_classes]  # [N, M, T]: log x_t(c), t = 1..T
        phi = self._log_phi(state, candidate_classes)[..., :-1]  # [N, M, T]: log phi_{t-1}, t = 1..T
        first_emission = (phi + observed).masked_fill(~self.frame_is_valid[utterance][:, None, :], NEGATIVE_INFINITY)
        return torch.logsumexp(first_emission, dim=-1)  # [N, M]

    def full_sequence_score(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log P(labelling = g)`` of every hypothesis g: its score when <eos> ends it -> ``[N]``."""
        last_frame = self.lengths[state["utterance"]][:, None]  # [N, 1]
        at_end = torch.logaddexp(state["log_label"].gather(1, last_frame), state["log_blank"].gather(1, last_frame))
        return at_end[:, 0]

    def extend(self, state: dict[str, torch.Tensor], classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The states of ``g + c`` for each hypothesis g of ``state`` and its class ``classes [N]``
        (non-blank). Select the parent rows first (``select_state``) when hypotheses are reordered."""
        utterance = state["utterance"]
        observed = self.log_probs_by_class[utterance, classes]  # [N, T]: log x_t(c)
        label_cumulative = torch.nn.functional.pad(observed.cumsum(dim=1), (1, 0))  # [N, T + 1]: C_0..C_T
        phi = self._log_phi(state, classes[:, None])[:, 0]  # [N, T + 1]: log phi_0..phi_T
        # log n_t = C_t + logcumsumexp_{s<=t}(log phi_{s-1} - C_{s-1}) for t >= 1; n_0 = 0.
        log_label = label_cumulative[:, 1:] + torch.logcumsumexp(phi[:, :-1] - label_cumulative[:, :-1], dim=1)
        log_label = torch.nn.functional.pad(log_label, (1, 0), value=NEGATIVE_INFINITY)  # [N, T + 1]
        # log b_t = D_t + logcumsumexp_{s<=t}(log n_{s-1} - D_{s-1}) for t >= 1; b_0 = 0.
        blank_cumulative = self.blank_cumulative.index_select(0, utterance)  # [N, T + 1]
        log_blank = blank_cumulative[:, 1:] + torch.logcumsumexp(log_label[:, :-1] - blank_cumulative[:, :-1], dim=1)
        log_blank = torch.nn.functional.pad(log_blank, (1, 0), value=NEGATIVE_INFINITY)  # [N, T + 1]
        return {"utterance": utterance, "last_class": classes, "log_label": log_label, "log_blank": log_blank}

    @staticmethod
    def _log_phi(state: dict[str, torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """``log phi_t(g, c)`` for t = 0..T and ``classes [N, M]`` -> ``[N, M, T + 1]``."""
        is_repeat = (classes == state["last_class"][:, None])[..., None]  # [N, M, 1]
        log_label = state["log_label"][:, None, :].masked_fill(is_repeat, NEGATIVE_INFINITY)  # [N, M, T + 1]
        return torch.logaddexp(state["log_blank"][:, None, :], log_label)


def ctc_prefix_log_probability(log_probs: torch.Tensor, classes: Sequence[int], complete: bool = False) -> float:
    """``log P(the CTC labelling starts with classes)`` of one utterance's ``log_probs [T, C]``;
    with ``complete=True``, ``log P(the labelling is exactly classes)``. ``classes`` are model
    classes (token + 1). Mostly for tests and inspection: beam search uses :class:`CTCPrefixScorer`.

    >>> log_probs = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3]]).log()
    >>> round(math.exp(ctc_prefix_log_probability(log_probs, [])), 4)
    1.0
    >>> round(math.exp(ctc_prefix_log_probability(log_probs, [], complete=True)), 4)  # blank, blank
    0.3
    """
    scorer = CTCPrefixScorer(log_probs[None], torch.tensor([log_probs.shape[0]], device=log_probs.device))
    state = scorer.initial_state(torch.zeros(1, dtype=torch.int64, device=log_probs.device))
    if not classes and not complete:
        return 0.0
    for position, label in enumerate(classes):
        label_tensor = torch.tensor([label], device=log_probs.device)
        if position == len(classes) - 1 and not complete:
            return float(scorer.score(state, label_tensor[:, None])[0, 0])
        state = scorer.extend(state, label_tensor)
    return float(scorer.full_sequence_score(state)[0])
