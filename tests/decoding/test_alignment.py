"""CTC forced alignment, checked against brute force, and the word-boundary scorer.

The brute-force reference enumerates every frame path of a tiny utterance (C ** T of them),
keeps those that collapse to the targets, and takes the one with the largest summed
log-probability: exactly what Viterbi over the CTC topology must return.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from cadence.decoding import (
    ctc_greedy,
    force_align,
    force_align_batch,
    score_word_boundaries,
    spans_to_seconds,
)


def collapse(path, blank: int = 0) -> list[int]:
    """Frame classes -> labelling: merge repeats, then drop blanks."""
    return [label for position, label in enumerate(path)
            if label != blank and (position == 0 or label != path[position - 1])]


def spans_of(path, blank: int = 0) -> list[tuple[int, int]]:
    """(first, last) frame of every emitted token, read off the path independently of the aligner."""
    spans = []
    for position, label in enumerate(path):
        if label == blank:
            continue
        if position > 0 and path[position - 1] == label:
            spans[-1] = (spans[-1][0], position)
        else:
            spans.append((position, position))
    return spans


def path_score(log_probs: torch.Tensor, path) -> float:
    return sum(float(log_probs[frame, label]) for frame, label in enumerate(path))


def brute_force_best(log_probs: torch.Tensor, targets, blank: int = 0) -> tuple[list[int], float]:
    """The best valid path and its score, by enumerating every path."""
    log_probs = log_probs.double()
    frames, classes = log_probs.shape
    valid = [path for path in itertools.product(range(classes), repeat=frames) if collapse(path, blank) == list(targets)]
    best = max(valid, key=lambda path: path_score(log_probs, path))
    return list(best), path_score(log_probs, best)


def planted(path, classes: int, high: float = 0.9, seed: int = 0) -> torch.Tensor:
    """Log-posteriors [T, C] that put ``high`` on the chosen class of each frame and spread the
    rest unevenly (seeded), so that no two paths tie."""
    frames, chosen = len(path), torch.tensor(path)
    rest = torch.rand(frames, classes, generator=torch.Generator().manual_seed(seed)) + 0.5
    rest[torch.arange(frames), chosen] = 0.0
    probabilities = rest / rest.sum(-1, keepdim=True) * (1 - high)
    probabilities[torch.arange(frames), chosen] = high
    return probabilities.log()


def random_log_probs(frames: int, classes: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(frames, classes, generator=generator).mul(2).log_softmax(-1)


def check_consistent(alignment, log_probs: torch.Tensor, targets, blank: int = 0) -> None:
    """The path is a valid alignment of the targets; spans and score agree with it."""
    assert len(alignment.path) == log_probs.shape[0]
    assert collapse(alignment.path, blank) == list(targets)
    assert alignment.spans == spans_of(alignment.path, blank)
    assert alignment.score == pytest.approx(path_score(log_probs.double(), alignment.path), abs=1e-9)


# ---------------------------------------------------------------------------- known paths


def test_follows_a_planted_path():
    path = [0, 1, 1, 0, 2, 2, 0]
    alignment = force_align(planted(path, classes=3), [1, 2])
    assert alignment.path == path
    assert alignment.spans == [(1, 2), (4, 5)]


def test_repeated_labels_get_a_blank_between_them():
    # Every frame says 3: the greedy path 3 3 3 3 collapses to ONE 3, not the two of the targets.
    log_probs = planted([3, 3, 3, 3], classes=4)
    assert ctc_greedy(log_probs[None]) == [[2]]  # token ids: class 3 is token 2, once
    alignment = force_align(log_probs, [3, 3])
    check_consistent(alignment, log_probs, [3, 3])
    (_, first_end), (second_start, _) = alignment.spans
    assert second_start - first_end >= 2  # at least one blank frame between the two 3s
    assert alignment.path.count(0) == 1  # and only the one it must have
    assert alignment.score == pytest.approx(brute_force_best(log_probs, [3, 3])[1])


def test_differs_from_greedy_when_greedy_is_not_an_alignment():
    # Greedy reads 1 2 1; the reference says 2 1: the first frame's 1 must give way.
    log_probs = planted([1, 1, 2, 0, 1, 0], classes=3)
    greedy_path = log_probs.argmax(-1).tolist()
    assert collapse(greedy_path) == [1, 2, 1]
    alignment = force_align(log_probs, [2, 1])
    check_consistent(alignment, log_probs, [2, 1])
    assert alignment.path != greedy_path
    assert alignment.path == brute_force_best(log_probs, [2, 1])[0]


def test_accepts_a_tensor_of_targets_and_another_blank():
    path = [2, 0, 0, 1, 1, 2]  # blank is class 2 here
    alignment = force_align(planted(path, classes=3), torch.tensor([0, 1]), blank=2)
    assert alignment.path == path
    assert alignment.spans == [(1, 2), (3, 4)]


# ---------------------------------------------------------------------------- optimality


@pytest.mark.parametrize("seed", range(8))
def test_optimal_against_brute_force(seed):
    generator = torch.Generator().manual_seed(1000 + seed)
    frames = int(torch.randint(1, 8, (1,), generator=generator))  # T <= 7
    classes, blank = (3, 0) if seed % 2 == 0 else (3, 2)  # blank first or last
    labels = [label for label in range(classes) if label != blank]
    checked = 0
    for _ in range(4):  # several target sequences per posterior, repeats included
        count = int(torch.randint(0, frames + 1, (1,), generator=generator))
        targets = [labels[int(index)] for index in torch.randint(0, len(labels), (count,), generator=generator)]
        if len(targets) + sum(a == b for a, b in zip(targets, targets[1:])) > frames:
            continue
        log_probs = random_log_probs(frames, classes, seed)
        alignment = force_align(log_probs, targets, blank=blank)
        check_consistent(alignment, log_probs, targets, blank)
        best_path, best_score = brute_force_best(log_probs, targets, blank)
        assert alignment.score == pytest.approx(best_score, abs=1e-9)
        assert alignment.path == best_path  # random posteriors: the best path is unique
        checked += 1
    assert checked >= 2


def test_optimal_with_repeats_on_a_tight_budget():
    # [1, 1, 2, 2] needs 6 frames; with 7 there is one spare frame to place well.
    for seed in range(4):
        log_probs = random_log_probs(7, 3, seed)
        alignment = force_align(log_probs, [1, 1, 2, 2])
        assert alignment.path == brute_force_best(log_probs, [1, 1, 2, 2])[0]


def test_minus_infinity_entries_are_avoided():
    log_probs = random_log_probs(6, 3, seed=3)
    log_probs[2:4, 0] = float("-inf")  # no blank on frames 2 and 3
    log_probs[0, 1] = float("-inf")
    alignment = force_align(log_probs, [1, 2])
    check_consistent(alignment, log_probs, [1, 2])
    assert alignment.path == brute_force_best(log_probs, [1, 2])[0]
    assert alignment.path[0] != 1 and 0 not in alignment.path[2:4]


def test_no_finite_path_is_an_error():
    log_probs = random_log_probs(5, 3, seed=0)
    log_probs[:, 2] = float("-inf")  # label 2 can never be emitted
    with pytest.raises(ValueError, match="-inf"):
        force_align(log_probs, [1, 2])


# ---------------------------------------------------------------------------- edge cases


def test_too_few_frames_names_what_is_needed():
    with pytest.raises(ValueError, match=r"3 frames cannot hold 3 targets.* 3 \+ 1 = 4"):
        force_align(random_log_probs(3, 3, seed=0), [1, 1, 2])
    force_align(random_log_probs(4, 3, seed=0), [1, 1, 2])  # exactly enough


def test_empty_targets_give_the_all_blank_path():
    log_probs = random_log_probs(5, 3, seed=1)
    alignment = force_align(log_probs, [])
    assert alignment.path == [0] * 5 and alignment.spans == []
    assert alignment.score == pytest.approx(float(log_probs[:, 0].double().sum()))


@pytest.mark.parametrize("targets, blank", [([0, 1], 0), ([3], 0), ([1], 5)])
def test_invalid_targets_or_blank_are_refused(targets, blank):
    with pytest.raises(ValueError):
        force_align(random_log_probs(4, 3, seed=0), targets, blank=blank)


def test_batch_equals_one_utterance_at_a_time():
    generator = torch.Generator().manual_seed(7)
    log_probs = torch.randn(3, 9, 4, generator=generator).log_softmax(-1)
    lengths = torch.tensor([9, 5, 7])
    targets = [[1, 1, 3], [2], [3, 2, 2, 1]]
    padded = log_probs.clone()
    padded[1, 5:, 2] = 10.0  # frames beyond a length must not matter
    batched = force_align_batch(padded, lengths, targets)
    assert batched == [force_align(log_probs[index, :length], labels)
                       for index, (length, labels) in enumerate(zip(lengths.tolist(), targets))]
    assert [len(alignment.path) for alignment in batched] == [9, 5, 7]


# ---------------------------------------------------------------------------- seconds and boundaries


def test_spans_to_seconds_centres_frames_on_their_times():
    seconds = spans_to_seconds([(0, 0), (2, 4)], 0.04)
    assert [value for span in seconds for value in span] == pytest.approx([0.0, 0.02, 0.06, 0.18])


def test_boundary_scorer_on_hand_made_segments():
    # Recordings at 8 kHz: 0-0.1 s, 0.2-0.3 s, 0.4-0.5 s; silences 0.1-0.2 s and 0.3-0.4 s.
    segments = [{"start": 0, "end": 800}, {"start": 1600, "end": 2400}, {"start": 3200, "end": 4000}]
    frame = 0.02
    # Boundaries (midpoints of the gaps): 0.15 (inside), 0.45 (beyond 0.4 + one frame).
    score = score_word_boundaries(segments, [(0.0, 0.1), (0.2, 0.3), (0.6, 0.7)], frame)
    assert (score.inside, score.word_inside) == ([True, False], [True, False, False])
    assert (score.boundaries_inside, score.boundaries) == (1, 2)
    # The silence 0.1-0.4 s widened by one frame each side: 0.08-0.42 s.
    for boundary, expected in [(0.081, True), (0.419, True), (0.079, False), (0.421, False), (0.3, True)]:
        two_words = score_word_boundaries([(0, 800), (3200, 4000)], [(0.0, boundary), (boundary, 0.5)], frame)
        assert two_words.inside == [expected], boundary
    with pytest.raises(ValueError, match="3 segments for 2"):
        score_word_boundaries(segments, [(0.0, 0.1), (0.2, 0.3)], frame)


def test_boundary_scorer_on_generated_connected_digits(fsdd_root, tmp_path):
    from cadence.corpora.connected_digits import prepare_connected_digits

    paths = prepare_connected_digits(fsdd_root, tmp_path / "corpus", sizes=(2, 2, 4))
    records = [json.loads(line) for line in (tmp_path / "corpus" / "segments" / "test.jsonl").read_text().splitlines()]
    frame = 0.04
    for record in records:
        segments = record["segments"]
        exact = [(segment["start"] / 8000, segment["end"] / 8000) for segment in segments]
        score = score_word_boundaries(segments, exact, frame)
        assert score.boundaries == len(segments) - 1 == score.boundaries_inside
        # Each boundary moved into the middle of the next recording: none inside.
        shifted = [(start, end) for start, end in exact]
        for word in range(len(shifted) - 1):
            middle = (exact[word + 1][0] + exact[word + 1][1]) / 2
            shifted[word] = (shifted[word][0], middle)
            shifted[word + 1] = (middle, shifted[word + 1][1])
        assert score_word_boundaries(segments, shifted, frame).boundaries_inside == 0
    assert paths["test"].is_file()
