"""CTC decoding: best path, prefix beam search and prefix scores, checked against brute force.

The brute-force reference enumerates every frame path of a tiny utterance (C ** T of them),
collapses each, and sums probabilities per labelling: the exact quantity prefix beam search
approximates and the prefix scorer computes.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from cadence.decoding import CTCPrefixScorer, ctc_greedy, ctc_prefix_beam_search, ctc_prefix_log_probability
from cadence.models.seq2seq import select_state


def collapse(path) -> tuple[int, ...]:
    """Frame classes -> labelling (classes): merge repeats, then drop blanks."""
    merged = [label for position, label in enumerate(path) if position == 0 or label != path[position - 1]]
    return tuple(label for label in merged if label != 0)


def labelling_probabilities(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Exact P(labelling) of every labelling of ``log_probs [T, C]``, by enumerating all paths."""
    probabilities = log_probs.double().exp()
    frames, classes = probabilities.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=frames):
        probability = math.prod(float(probabilities[frame, label]) for frame, label in enumerate(path))
        labelling = collapse(path)
        totals[labelling] = totals.get(labelling, 0.0) + probability
    return totals


def random_log_probs(*shape: int, seed: int, sharpness: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.log_softmax(sharpness * torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def one_hot_log_probs(paths: list[list[int]], classes: int, peak: float = 0.97) -> torch.Tensor:
    """[B, T, C] log-posteriors giving ``peak`` to each frame's class of ``paths``, the rest spread evenly."""
    log_probs = torch.full((len(paths), len(paths[0]), classes), math.log((1 - peak) / (classes - 1)))
    for utterance, path in enumerate(paths):
        log_probs[utterance, torch.arange(len(path)), torch.tensor(path)] = math.log(peak)
    return log_probs


# ------------------------------------------------------------------------------ greedy


def test_greedy_merges_repeats_keeps_blank_separated_repeats_and_drops_blanks():
    paths = [
        [0, 1, 1, 0, 1, 2, 2, 0],  # a a | a | b b -> a a b
        [3, 3, 3, 3, 3, 3, 3, 3],  # one long c -> c
        [0, 0, 0, 0, 0, 0, 0, 0],  # only blanks -> nothing
        [1, 2, 1, 2, 0, 0, 2, 2],  # alternating labels never merge
    ]
    assert ctc_greedy(one_hot_log_probs(paths, classes=4)) == [[0, 0, 1], [2], [], [0, 1, 0, 1, 1]]


def test_greedy_stops_at_each_utterance_length():
    paths = [[1, 1, 2, 2, 3, 3], [2, 0, 2, 3, 1, 1], [3, 1, 2, 3, 1, 2]]
    log_probs = one_hot_log_probs(paths, classes=4)
    batched = ctc_greedy(log_probs, torch.tensor([6, 3, 0]))
    assert batched == [[0, 1, 2], [1, 1], []]
    # Padding frames never leak: the same utterances trimmed one at a time agree.
    for utterance, length in enumerate([6, 3, 0]):
        assert ctc_greedy(log_probs[utterance : utterance + 1, :length]) == [batched[utterance]]


def test_greedy_agrees_with_a_plain_loop_on_random_batches():
    log_probs = random_log_probs(5, 30, 4, seed=1, sharpness=0.5)  # many blanks and repeats
    lengths = torch.tensor([30, 17, 1, 29, 0])
    expected = []
    for utterance, length in enumerate(lengths.tolist()):
        path = log_probs[utterance, :length].argmax(dim=-1).tolist()
        expected.append([label - 1 for label in collapse(path)])
    assert ctc_greedy(log_probs, lengths) == expected


# ----------------------------------------------------------------- prefix beam search


def test_prefix_beam_search_finds_the_best_labelling_when_it_is_not_the_best_path():
    # T = 2, classes blank, a, b with the same posteriors at both frames: the best path is
    # blank-blank (0.16), but "a" sums a-a, a-blank and blank-a: 0.35^2 + 2 * 0.35 * 0.4 = 0.4025.
    log_probs = torch.tensor([[0.4, 0.35, 0.25], [0.4, 0.35, 0.25]]).log()
    exact = labelling_probabilities(log_probs)
    best_labelling = max(exact, key=exact.get)
    assert best_labelling == (1,) and ctc_greedy(log_probs[None]) == [[]]
    tokens, score = ctc_prefix_beam_search(log_probs, beam_size=3)[0][0]
    assert tokens == [0]
    assert score == pytest.approx(math.log(exact[best_labelling]), abs=1e-12)
    assert math.exp(score) == pytest.approx(0.4025)


@pytest.mark.parametrize("seed", range(6))
def test_unpruned_prefix_beam_search_equals_brute_force_on_tiny_utterances(seed):
    frames, classes = 4, 3
    log_probs = random_log_probs(frames, classes, seed=seed)
    exact = labelling_probabilities(log_probs)
    # A beam as wide as the number of labellings never prunes: every score is exact.
    nbest = ctc_prefix_beam_search(log_probs, beam_size=len(exact), top_k=classes - 1)[0]
    assert len(nbest) == len(exact)
    for tokens, score in nbest:
        assert score == pytest.approx(math.log(exact[tuple(label + 1 for label in tokens)]), abs=1e-10)
    assert [score for _, score in nbest] == sorted((score for _, score in nbest), reverse=True)
    assert sum(math.exp(score) for _, score in nbest) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_small_beam_finds_the_brute_force_best_labelling(seed):
    log_probs = random_log_probs(5, 4, seed=10 + seed, sharpness=1.5)
    exact = labelling_probabilities(log_probs)
    best = max(exact, key=exact.get)
    tokens, score = ctc_prefix_beam_search(log_probs, beam_size=8)[0][0]
    assert tuple(label + 1 for label in tokens) == best
    # Prefixes pruned on the way took some paths of the best labelling with them: its score is
    # a lower bound, and a close one.
    assert math.log(exact[best]) - 0.05 < score <= math.log(exact[best]) + 1e-12


def test_prefix_beam_search_agrees_with_greedy_on_peaked_posteriors():
    generator = torch.Generator().manual_seed(3)
    paths = torch.randint(0, 5, (4, 25), generator=generator).tolist()
    log_probs = one_hot_log_probs(paths, classes=5, peak=0.995)
    lengths = torch.tensor([25, 20, 13, 7])
    results = ctc_prefix_beam_search(log_probs, lengths, beam_size=4)
    assert [nbest[0][0] for nbest in results] == ctc_greedy(log_probs, lengths)


def test_prefix_beam_search_needs_a_blank_between_repeated_labels():
    # Paths a a (merged: "a") and a blank a ("a a") must stay apart.
    log_probs = torch.tensor([[0.05, 0.9, 0.05], [0.6, 0.35, 0.05], [0.05, 0.9, 0.05]]).log()
    exact = labelling_probabilities(log_probs)
    nbest = dict(
        (tuple(tokens), score) for tokens, score in ctc_prefix_beam_search(log_probs, beam_size=20, top_k=2)[0]
    )
    assert nbest[(0, 0)] == pytest.approx(math.log(exact[(1, 1)]))
    assert nbest[(0,)] == pytest.approx(math.log(exact[(1,)]))


def test_prefix_beam_search_batches_and_lengths_match_one_utterance_at_a_time():
    log_probs = random_log_probs(3, 12, 6, seed=5)
    lengths = torch.tensor([12, 5, 9])
    batched = ctc_prefix_beam_search(log_probs, lengths, beam_size=5)
    for utterance, length in enumerate(lengths.tolist()):
        alone = ctc_prefix_beam_search(log_probs[utterance, :length], beam_size=5)  # [T, C]: a batch of one
        assert batched[utterance] == alone[0]


def test_prefix_beam_search_pruning():
    log_probs = random_log_probs(6, 8, seed=7)
    # top_k=1 only ever grows prefixes with each frame's best class: still one n-best per utterance.
    assert len(ctc_prefix_beam_search(log_probs, beam_size=3, top_k=1)[0]) >= 1
    # A threshold above every log-probability leaves the empty labelling (all blanks) alone.
    (only,) = ctc_prefix_beam_search(log_probs, beam_size=3, prune_threshold=0.1)[0]
    assert only[0] == [] and only[1] == pytest.approx(float(log_probs[:, 0].sum()))


# ---------------------------------------------------------------------- prefix scores


def prefix_probability(exact: dict[tuple[int, ...], float], prefix: tuple[int, ...]) -> float:
    return sum(probability for labelling, probability in exact.items() if labelling[: len(prefix)] == prefix)


@pytest.mark.parametrize("seed", range(3))
def test_prefix_scores_equal_brute_force_prefix_probabilities(seed):
    log_probs = random_log_probs(4, 3, seed=20 + seed)
    exact = labelling_probabilities(log_probs)
    for length in range(4):
        for prefix in itertools.product([1, 2], repeat=length):
            expected = prefix_probability(exact, prefix)
            got = ctc_prefix_log_probability(log_probs, prefix)
            assert math.exp(got) == pytest.approx(expected, abs=1e-12), prefix
            full = ctc_prefix_log_probability(log_probs, prefix, complete=True)
            assert math.exp(full) == pytest.approx(exact.get(prefix, 0.0), abs=1e-12), prefix


def test_eos_score_equals_ctc_loss_for_a_batch_with_padding():
    classes, frames = 5, 9
    log_probs = random_log_probs(4, frames, classes, seed=30)
    lengths = torch.tensor([9, 6, 5, 8])
    labellings = [[1, 1], [2, 3, 2], [4, 4, 4], [1, 2, 3, 4, 1]]  # "4 4 4" needs 5 frames: 4 blank 4 blank 4
    scorer = CTCPrefixScorer(log_probs, lengths)
    state = scorer.initial_state(torch.arange(4))
    scores = torch.empty(4, dtype=torch.float64)
    for position in range(max(len(labelling) for labelling in labellings) + 1):
        for utterance, labelling in enumerate(labellings):  # each scored once it is complete
            if len(labelling) == position:
                scores[utterance] = scorer.full_sequence_score(state)[utterance]
        # Complete hypotheses keep growing with class 1; their scores were taken already.
        state = scorer.extend(state, torch.tensor([(labelling + [1] * 9)[position] for labelling in labellings]))
    targets = torch.tensor([label for labelling in labellings for label in labelling])
    target_lengths = torch.tensor([len(labelling) for labelling in labellings])
    losses = F.ctc_loss(
        log_probs.transpose(0, 1).double(), targets, lengths, target_lengths, blank=0, reduction="none"
    )
    torch.testing.assert_close(scores, -losses, rtol=0, atol=1e-10)


def test_scorer_scores_many_candidates_of_reordered_hypotheses_at_once():
    log_probs = random_log_probs(2, 7, 4, seed=40)
    lengths = torch.tensor([7, 5])
    scorer = CTCPrefixScorer(log_probs, lengths)
    # Hypotheses: utterance 0 "a", utterance 1 "c", utterance 0 "a b"; then reorder them.
    state = scorer.extend(scorer.initial_state(torch.tensor([0, 1, 0])), torch.tensor([1, 3, 1]))
    state = scorer.extend(state, torch.tensor([2, 2, 2]))  # "a b", "c b", "a b"
    prefixes = [[1, 2], [3, 2], [1, 2]]
    order = torch.tensor([2, 0, 1, 1])
    state = select_state(state, order)
    candidates = torch.tensor([[1, 2, 3], [3, 2, 1], [2, 2, 1], [1, 1, 1]])
    scores = scorer.score(state, candidates)  # [4, 3]
    full = scorer.full_sequence_score(state)
    for row, source in enumerate(order.tolist()):
        utterance = [0, 1, 0][source]
        single = log_probs[utterance, : lengths[utterance]]
        for column, label in enumerate(candidates[row].tolist()):
            expected = ctc_prefix_log_probability(single, prefixes[source] + [label])
            assert float(scores[row, column]) == pytest.approx(expected, abs=1e-12)
        assert float(full[row]) == pytest.approx(ctc_prefix_log_probability(single, prefixes[source], complete=True))
