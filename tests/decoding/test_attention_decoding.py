"""Attention greedy and beam search (joint with CTC too) on toy decoders with known answers.

The toy decoder's logits come from a fixed table indexed by (step, previous class), plus a
bias from the mean of the utterance's valid memory frames, so results depend on each
utterance's memory length but never on its padding.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from cadence.decoding import attention_beam_search, attention_greedy, ctc_greedy, maximum_lengths
from cadence.models.seq2seq import AttentionDecoder


class TableDecoder:
    """``logits = table[min(step, last row), previous class] + valid_memory_mean @ projection``."""

    def __init__(self, table: torch.Tensor, projection: torch.Tensor | None = None):
        self.table = table  # [steps, C, C] logits
        self.projection = projection  # [D, C] or None

    def initial_state(self, memory: torch.Tensor, memory_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        batch_size, frames, _ = memory.shape
        mask = torch.arange(frames)[None, :] < memory_lengths[:, None]  # [B, S]
        classes = self.table.shape[-1]
        if self.projection is None:
            bias = torch.zeros(batch_size, classes)
        else:
            mean = (memory * mask[..., None]).sum(dim=1) / memory_lengths[:, None].clamp(min=1)  # [B, D]
            bias = mean @ self.projection  # [B, C]
        step = torch.zeros(batch_size, dtype=torch.int64)
        return {"step": step, "bias": bias, "memory": memory, "memory_mask": mask}

    def step(self, previous_classes, state):
        row = state["step"].clamp(max=self.table.shape[0] - 1)
        logits = self.table[row, previous_classes] + state["bias"]  # [N, C]
        return logits, {**state, "step": state["step"] + 1}


def table_from_probabilities(rows: list[dict[int, list[float]]], classes: int) -> torch.Tensor:
    """Per step, {previous class: next-class probabilities}; unlisted previous classes get uniform."""
    table = torch.full((len(rows), classes, classes), 0.0)
    for step, row in enumerate(rows):
        for previous, probabilities in row.items():
            table[step, previous] = torch.tensor(probabilities).log()
    return table


def random_decoder(seed: int, classes: int = 4, steps: int = 6, size: int = 3, eos_shift: float = 0.0) -> TableDecoder:
    generator = torch.Generator().manual_seed(seed)
    table = 2.0 * torch.randn(steps, classes, classes, generator=generator)
    table[..., 0] += eos_shift
    return TableDecoder(table, torch.randn(size, classes, generator=generator))


def random_memory(lengths: list[int], size: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    memory = torch.randn(len(lengths), max(lengths), size, generator=generator)  # padding is noise too
    return memory, torch.tensor(lengths)


def sequence_log_probability(decoder: AttentionDecoder, memory, memory_lengths, classes: list[int]) -> float:
    """log p_attention(classes + <eos>) of a single utterance, by teacher forcing."""
    state = decoder.initial_state(memory, memory_lengths)
    previous, total = 0, 0.0
    for label in classes + [0]:
        logits, state = decoder.step(torch.tensor([previous]), state)
        total += float(torch.log_softmax(logits.double(), dim=-1)[0, label])
        previous = label
    return total


def all_hypotheses(classes: int, max_length: int):
    for length in range(max_length + 1):
        yield from (list(labels) for labels in itertools.product(range(1, classes), repeat=length))


# A constructed case: greedy takes "1" (0.5) and then ends (0.34): 0.17 in all; "2" (0.4) then
# <eos> (0.99) gives 0.396.
BEAM_BEATS_GREEDY = table_from_probabilities(
    [
        {0: [0.1, 0.5, 0.4]},
        {1: [0.34, 0.33, 0.33], 2: [0.99, 0.005, 0.005]},
        {1: [0.9, 0.05, 0.05], 2: [0.9, 0.05, 0.05]},
    ],
    classes=3,
)


def test_beam_search_finds_a_better_sequence_than_greedy_and_the_exhaustive_best():
    decoder = TableDecoder(BEAM_BEATS_GREEDY)
    memory, memory_lengths = torch.zeros(1, 2, 3), torch.tensor([2])
    greedy = attention_greedy(decoder, memory, memory_lengths, max_length=4)[0]
    tokens, score = attention_beam_search(decoder, memory, memory_lengths, beam_size=2, max_length=4)[0][0]
    assert greedy == [0] and tokens == [1]
    greedy_score = sequence_log_probability(decoder, memory, memory_lengths, [label + 1 for label in greedy])
    assert greedy_score == pytest.approx(math.log(0.17))
    assert score == pytest.approx(math.log(0.396)) and score > greedy_score
    exhaustive = max(
        all_hypotheses(3, 4), key=lambda labels: sequence_log_probability(decoder, memory, memory_lengths, labels)
    )
    assert tokens == [label - 1 for label in exhaustive]


@pytest.mark.parametrize("seed", range(5))
def test_beam_size_one_is_greedy(seed):
    decoder = random_decoder(seed, eos_shift=-1.0)
    memory, memory_lengths = random_memory([4, 1, 3, 2], seed=seed)
    greedy = attention_greedy(decoder, memory, memory_lengths)
    beam = attention_beam_search(decoder, memory, memory_lengths, beam_size=1)
    assert [nbest[0][0] for nbest in beam] == greedy
    for nbest in beam:
        assert len(nbest) == 1


@pytest.mark.parametrize("seed", range(3))
def test_wide_beam_finds_the_exhaustive_best_and_scores_are_log_probabilities(seed):
    decoder = random_decoder(100 + seed)
    memory, memory_lengths = random_memory([3], seed=seed)
    nbest = attention_beam_search(decoder, memory, memory_lengths, beam_size=40, max_length=3)[0]
    exact = {
        tuple(labels): sequence_log_probability(decoder, memory, memory_lengths, labels)
        for labels in all_hypotheses(4, 3)
    }
    ranked = sorted(exact.items(), key=lambda item: item[1], reverse=True)[:40]
    assert [tuple(label + 1 for label in tokens) for tokens, _ in nbest] == [labels for labels, _ in ranked]
    for (_, score), (_, expected) in zip(nbest, ranked):
        assert score == pytest.approx(expected, abs=1e-9)


def test_eos_first_gives_empty_hypotheses():
    table = table_from_probabilities([{0: [0.9, 0.05, 0.05]}], classes=3)
    memory, memory_lengths = torch.zeros(2, 3, 3), torch.tensor([3, 2])
    assert attention_greedy(TableDecoder(table), memory, memory_lengths) == [[], []]
    for nbest in attention_beam_search(TableDecoder(table), memory, memory_lengths, beam_size=2):
        assert nbest[0] == ([], pytest.approx(math.log(0.9)))


def test_max_length_forces_eos():
    table = torch.zeros(1, 3, 3)
    table[..., 0] = -30.0  # <eos> all but impossible
    table[..., 2] = 1.0  # token 1 preferred
    decoder = TableDecoder(table)
    memory, memory_lengths = torch.zeros(2, 4, 3), torch.tensor([4, 2])
    assert attention_greedy(decoder, memory, memory_lengths, max_length=3) == [[1, 1, 1], [1, 1, 1]]
    assert attention_greedy(decoder, memory, memory_lengths, max_length_ratio=0.5) == [[1, 1], [1]]
    assert attention_greedy(decoder, memory, memory_lengths, max_length=0) == [[], []]
    # A forced <eos> still costs its log-probability, so the empty hypothesis (ended at the
    # first step) competes; the limit only bounds the others.
    single = attention_beam_search(decoder, memory, memory_lengths, beam_size=1, max_length_ratio=1.0)
    assert [nbest[0][0] for nbest in single] == [[1, 1, 1, 1], [1, 1]]
    results = attention_beam_search(decoder, memory, memory_lengths, beam_size=3, max_length_ratio=1.0)
    for nbest, limit in zip(results, [4, 2]):
        assert [1] * limit in [tokens for tokens, _ in nbest]
        assert all(len(tokens) <= limit and -1 not in tokens for tokens, _ in nbest)


def test_maximum_lengths_default_is_a_ratio_of_memory_length():
    assert maximum_lengths(torch.tensor([7, 1, 0])).tolist() == [14, 2, 1]
    assert maximum_lengths(torch.tensor([7, 1]), max_length_ratio=0.5).tolist() == [4, 1]


def test_length_penalty_divides_by_length_and_can_prefer_longer_hypotheses():
    # "1 <eos>" has probability 0.3 * 0.9 = 0.27, "<eos>" 0.4: plain scores prefer the empty
    # hypothesis; per class, log(0.27) / 2 > log(0.4).
    table = table_from_probabilities(
        [{0: [0.4, 0.3, 0.3]}] + [{1: [0.9, 0.05, 0.05], 2: [0.9, 0.05, 0.05]}] * 2,
        classes=3,
    )
    decoder, memory, memory_lengths = TableDecoder(table), torch.zeros(1, 3, 3), torch.tensor([3])
    plain = attention_beam_search(decoder, memory, memory_lengths, beam_size=3)[0]
    normalised = attention_beam_search(decoder, memory, memory_lengths, beam_size=3, length_penalty=1.0)[0]
    assert plain[0] == ([], pytest.approx(math.log(0.4)))
    assert len(normalised[0][0]) == 1
    tokens, score = normalised[0]
    raw = sequence_log_probability(decoder, memory, memory_lengths, [label + 1 for label in tokens])
    assert score == pytest.approx(raw / 2)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.4])
def test_a_batch_decodes_like_its_utterances_one_at_a_time(ctc_weight):
    decoder = random_decoder(7, classes=5)
    lengths = [5, 2, 4]
    memory, memory_lengths = random_memory(lengths, seed=7)
    ctc_log_probs = torch.log_softmax(torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(8)), dim=-1)
    options = dict(
        beam_size=3, length_penalty=0.5, ctc_weight=ctc_weight, ctc_log_probs=ctc_log_probs, ctc_candidates=3
    )
    batched = attention_beam_search(decoder, memory, memory_lengths, **options)
    greedy = attention_greedy(decoder, memory, memory_lengths)
    for utterance, length in enumerate(lengths):
        one = slice(utterance, utterance + 1)
        single_options = {**options, "ctc_log_probs": ctc_log_probs[one, :length]}
        alone = attention_beam_search(decoder, memory[one, :length], memory_lengths[one], **single_options)[0]
        assert [tokens for tokens, _ in alone] == [tokens for tokens, _ in batched[utterance]]
        torch.testing.assert_close([score for _, score in alone], [score for _, score in batched[utterance]])
        assert attention_greedy(decoder, memory[one, :length], memory_lengths[one]) == [greedy[utterance]]


# -------------------------------------------------------------------------- joint CTC


def ctc_log_probability(log_probs: torch.Tensor, classes: list[int]) -> float:
    """log P(labelling = classes) of one utterance's ``log_probs [T, C]``, from torch's CTC loss."""
    if not classes:
        return float(log_probs[:, 0].sum())
    loss = F.ctc_loss(
        log_probs[:, None].double(), torch.tensor([classes]), torch.tensor([log_probs.shape[0]]),
        torch.tensor([len(classes)]), blank=0, reduction="sum",
    )
    return -float(loss)


# Attention prefers "b" (class 2); under CTC (T = 2, both frames blank 0.4, a 0.35, b 0.25) the
# best path is blank-blank but the best labelling is "a" (0.4025).
JOINT_TABLE = table_from_probabilities(
    [{0: [0.1, 0.2, 0.7]}, {1: [0.8, 0.1, 0.1], 2: [0.8, 0.1, 0.1]}, {1: [0.8, 0.1, 0.1], 2: [0.8, 0.1, 0.1]}],
    classes=3,
)
JOINT_CTC = torch.tensor([[[0.4, 0.35, 0.25], [0.4, 0.35, 0.25]]]).log()


def test_ctc_weight_one_returns_the_ctc_best_labelling():
    decoder, memory, memory_lengths = TableDecoder(JOINT_TABLE), torch.zeros(1, 2, 3), torch.tensor([2])
    assert attention_beam_search(decoder, memory, memory_lengths, beam_size=2)[0][0][0] == [1]
    assert ctc_greedy(JOINT_CTC) == [[]]
    tokens, score = attention_beam_search(
        decoder, memory, memory_lengths, beam_size=2, ctc_log_probs=JOINT_CTC, ctc_weight=1.0, ctc_candidates=2
    )[0][0]
    assert tokens == [0]
    assert score == pytest.approx(math.log(0.4025))


@pytest.mark.parametrize("seed", range(3))
def test_ctc_weight_one_with_a_wide_beam_finds_the_brute_force_best_labelling(seed):
    generator = torch.Generator().manual_seed(50 + seed)
    ctc_log_probs = torch.log_softmax(torch.randn(1, 4, 3, generator=generator, dtype=torch.float64), dim=-1)
    exact = {tuple(labels): ctc_log_probability(ctc_log_probs[0], labels) for labels in all_hypotheses(3, 4)}
    best = max(exact, key=exact.get)
    decoder, memory, memory_lengths = random_decoder(seed, classes=3), torch.zeros(1, 4, 3), torch.tensor([4])
    tokens, score = attention_beam_search(
        decoder, memory, memory_lengths, beam_size=16, ctc_log_probs=ctc_log_probs, ctc_weight=1.0, ctc_candidates=2
    )[0][0]
    assert tuple(label + 1 for label in tokens) == best
    assert score == pytest.approx(exact[best], abs=1e-9)


def test_joint_score_mixes_attention_and_full_ctc_log_probabilities():
    decoder, memory, memory_lengths = TableDecoder(JOINT_TABLE), torch.zeros(1, 2, 3), torch.tensor([2])
    nbest = attention_beam_search(
        decoder, memory, memory_lengths, beam_size=3, ctc_log_probs=JOINT_CTC, ctc_weight=0.3, ctc_candidates=2
    )[0]
    assert len(nbest) == 3
    for tokens, score in nbest:
        classes = [label + 1 for label in tokens]
        attention = sequence_log_probability(decoder, memory, memory_lengths, classes)
        expected = 0.7 * attention + 0.3 * ctc_log_probability(JOINT_CTC[0], classes)
        assert score == pytest.approx(expected, abs=1e-9)


def test_joint_search_needs_ctc_log_probs_and_a_weight_within_zero_and_one():
    decoder, memory, memory_lengths = TableDecoder(JOINT_TABLE), torch.zeros(1, 2, 3), torch.tensor([2])
    with pytest.raises(ValueError, match="ctc_log_probs"):
        attention_beam_search(decoder, memory, memory_lengths, ctc_weight=0.5)
    with pytest.raises(ValueError, match="ctc_weight"):
        attention_beam_search(decoder, memory, memory_lengths, ctc_log_probs=JOINT_CTC, ctc_weight=1.5)
