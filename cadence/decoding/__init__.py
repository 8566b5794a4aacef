"""Decoders: model outputs to hypotheses of TOKEN ids (model class - 1).

- :mod:`cadence.decoding.ctc`: best path and prefix beam search over CTC posteriors;
- :mod:`cadence.decoding.attention`: greedy and beam search for attention decoders, optionally
  joint with a CTC head;
- :mod:`cadence.decoding.joint`: the CTC prefix scores that joint search uses.
"""

from cadence.decoding.alignment import (
    Alignment,
    BoundaryScore,
    force_align,
    force_align_batch,
    score_word_boundaries,
    spans_to_seconds,
)
from cadence.decoding.attention import (
    DEFAULT_MAX_LENGTH_RATIO,
    attention_beam_search,
    attention_greedy,
    maximum_lengths,
)
from cadence.decoding.ctc import ctc_greedy, ctc_prefix_beam_search
from cadence.decoding.joint import CTCPrefixScorer, ctc_prefix_log_probability

__all__ = [
    "Alignment",
    "BoundaryScore",
    "CTCPrefixScorer",
    "DEFAULT_MAX_LENGTH_RATIO",
    "attention_beam_search",
    "attention_greedy",
    "ctc_greedy",
    "ctc_prefix_beam_search",
    "ctc_prefix_log_probability",
    "force_align",
    "force_align_batch",
    "maximum_lengths",
    "score_word_boundaries",
    "spans_to_seconds",
]
