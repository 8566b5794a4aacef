"""Word and character error rates: hand-computed cases, jiwer parity, and the Metric contract."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.distributed as dist

from cadence.metrics import (
    CharacterErrorRate,
    WordErrorRate,
    edit_operations,
    error_counts,
    utterance_errors,
)

import jiwer  # noqa: E402  (a test dependency: the reference the counts must equal)


def counts_of(metric) -> tuple[int, int, int, int]:
    results = metric.compute()
    name = metric.name
    return (
        results[f"{name}_substitutions"],
        results[f"{name}_deletions"],
        results[f"{name}_insertions"],
        results[f"{name}_reference_{metric.unit_plural}"],
    )


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("a b c", "a b c", (0, 0, 0, 3)),
        ("a b c", "a x c", (1, 0, 0, 3)),  # substitution
        ("a b c", "a c", (0, 1, 0, 3)),  # deletion
        ("a c", "a b c", (0, 0, 1, 2)),  # insertion
        ("a b c", "", (0, 3, 0, 3)),  # empty hypothesis: everything deleted
        ("", "a b", (0, 0, 2, 0)),  # empty reference: everything inserted
        ("", "", (0, 0, 0, 0)),
        ("  a   b ", "a b", (0, 0, 0, 2)),  # runs of whitespace separate words, ends are ignored
        ("a\tb", "a b", (0, 0, 0, 2)),  # any whitespace separates (jiwer keeps a lone tab inside a word)
        ("naïve café", "naive café", (1, 0, 0, 2)),  # unicode words compare exactly
        ("一 二 三", "一 三 三 四", (1, 0, 1, 3)),
    ],
)
def test_word_error_counts_by_hand(reference, hypothesis, expected):
    metric = WordErrorRate()
    metric.update([hypothesis], [reference])
    assert counts_of(metric) == expected
    substitutions, deletions, insertions, reference_words = expected
    result = metric.compute()
    if reference_words:
        assert result["wer"] == (substitutions + deletions + insertions) / reference_words
    else:
        assert math.isnan(result["wer"])
    assert result["wer_sentence_error_rate"] == float(substitutions + deletions + insertions > 0)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("kitten", "sitting", (2, 0, 1, 6)),
        ("ab c", "abc", (0, 1, 0, 4)),  # the inner space is a character
        ("a   b", "a b", (0, 2, 0, 5)),  # every inner space counts
        ("  abc\n", "abc", (0, 0, 0, 3)),  # leading and trailing whitespace is stripped
        ("naïve", "naive", (1, 0, 0, 5)),  # code points, no normalization
        ("我爱你", "我你", (0, 1, 0, 3)),
        ("", "ab", (0, 0, 2, 0)),
        ("abc", "", (0, 3, 0, 3)),
    ],
)
def test_character_error_counts_by_hand(reference, hypothesis, expected):
    metric = CharacterErrorRate()
    metric.update([hypothesis], [reference])
    assert counts_of(metric) == expected


def test_empty_reference_adds_insertions_to_a_corpus_with_reference_words():
    metric = WordErrorRate()
    metric.update(["a b", "x y"], ["a b", ""])
    result = metric.compute()
    assert result["wer"] == 1.0  # 2 insertions / 2 reference words
    assert result["wer_insertions"] == 2
    assert result["wer_sentence_error_rate"] == 0.5


def test_rate_is_corpus_level_not_a_mean_of_utterance_ratios():
    references = ["a", "a b c d"]
    hypotheses = ["b", "a b c d"]
    metric = WordErrorRate()
    metric.update(hypotheses, references)
    assert metric.compute()["wer"] == pytest.approx(1 / 5)
    mean_of_ratios = sum(jiwer.wer(reference, hypothesis) for reference, hypothesis in zip(references, hypotheses)) / 2
    assert mean_of_ratios == pytest.approx(0.5)


def test_helpers_agree_with_each_other():
    assert edit_operations("kitten", "sitting") == (2, 0, 1, 4)
    assert edit_operations([3, 1, 2], [3, 2]) == (0, 1, 0, 2)
    # One deletion and one insertion (cost 2) beat three substitutions.
    assert utterance_errors("a b c d", "a c d e", unit="word") == {
        "substitutions": 0, "deletions": 1, "insertions": 1, "hits": 3, "reference_units": 4,
    }
    counts = error_counts(["a b c d", ""], ["a c d e", "e"])
    assert counts._asdict() == {
        "substitutions": 0, "deletions": 1, "insertions": 2, "hits": 3, "reference_units": 4,
        "utterances": 2, "utterances_with_errors": 2,
    }


def random_pairs(count: int, seed: int) -> tuple[list[str], list[str]]:
    """Reference and hypothesis texts with random edits over a small vocabulary.

    The vocabulary is tiny on purpose: repeated words make many alignments of equal cost,
    which is where two implementations would split errors differently into S, D and I.
    """
    generator = random.Random(seed)
    vocabulary = ["a", "b", "ab", "ba", "oh", "zéro", "un", "deux", "二", "x"]
    references, hypotheses = [], []
    for index in range(count):
        reference = [generator.choice(vocabulary) for _ in range(generator.randint(0 if index % 25 == 0 else 1, 12))]
        hypothesis = list(reference)
        for _ in range(generator.choice([0, 1, 2, 3, 6])):
            position = generator.randint(0, len(hypothesis))
            edit = generator.random()
            if edit < 0.35 and position < len(hypothesis):
                hypothesis[position] = generator.choice(vocabulary)
            elif edit < 0.65 and position < len(hypothesis):
                del hypothesis[position]
            else:
                hypothesis.insert(position, generator.choice(vocabulary))

        def join(words: list[str]) -> str:
            # Runs of spaces and spaces at the ends: both implementations must see the same words.
            separators = [generator.choice([" ", " ", " ", "  "]) for _ in words]
            text = "".join(word + separator for word, separator in zip(words, separators))
            return generator.choice(["", " "]) + text

        references.append(join(reference))
        hypotheses.append(join(hypothesis))
    return references, hypotheses


@pytest.mark.parametrize(
    ("metric_class", "process"), [(WordErrorRate, "process_words"), (CharacterErrorRate, "process_characters")]
)
def test_identical_to_jiwer_on_a_random_test_set(metric_class, process):
    references, hypotheses = random_pairs(400, seed=5)
    expected = getattr(jiwer, process)(references, hypotheses)
    metric = metric_class()
    metric.update(hypotheses, references)
    result = metric.compute()
    name = metric.name
    assert (result[f"{name}_substitutions"], result[f"{name}_deletions"], result[f"{name}_insertions"]) == (
        expected.substitutions, expected.deletions, expected.insertions,
    )
    reference_units = expected.hits + expected.substitutions + expected.deletions
    assert result[f"{name}_reference_{metric.unit_plural}"] == reference_units
    assert result[name] == pytest.approx(getattr(expected, name), rel=1e-12)
    # Utterance by utterance too: equal totals could hide compensating differences.
    for reference, hypothesis in zip(references, hypotheses):
        one = getattr(jiwer, process)(reference, hypothesis)
        errors = utterance_errors(reference, hypothesis, unit=metric.unit)
        assert (errors["substitutions"], errors["deletions"], errors["insertions"], errors["hits"]) == (
            one.substitutions, one.deletions, one.insertions, one.hits,
        ), (reference, hypothesis)


@pytest.mark.parametrize("metric_class", [WordErrorRate, CharacterErrorRate])
def test_states_of_two_halves_sum_to_the_state_of_the_whole(metric_class):
    references, hypotheses = random_pairs(120, seed=11)
    whole = metric_class()
    whole.update(hypotheses, references)
    first, second = metric_class(), metric_class()
    first.update(hypotheses[:37], references[:37])
    second.update(hypotheses[37:], references[37:])
    summed = {key: first.state_dict()[key] + second.state_dict()[key] for key in whole.state_dict()}
    assert summed == whole.state_dict()
    merged = metric_class()
    merged.load_state_dict(summed)
    assert merged.compute() == whole.compute()


def test_state_dict_round_trip_and_reset():
    metric = CharacterErrorRate()
    metric.update(["abd", "xyz"], ["abc", "xy"])
    state = metric.state_dict()
    assert all(value.dtype == torch.int64 for value in state.values())
    restored = CharacterErrorRate()
    restored.load_state_dict(state)
    assert restored.compute() == metric.compute()
    metric.reset()
    assert metric.compute()["cer_utterances"] == 0


def test_sync_in_a_one_process_group_keeps_the_counts(tmp_path):
    metric = WordErrorRate()
    metric.update(["a x c"], ["a b c"])
    before = metric.compute()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        metric.sync()
    finally:
        dist.destroy_process_group()
    assert metric.compute() == before


def test_nothing_counted_gives_nan_rates_and_zero_counts():
    result = WordErrorRate().compute()
    assert math.isnan(result["wer"]) and math.isnan(result["wer_sentence_error_rate"])
    assert result["wer_substitutions"] == result["wer_reference_words"] == result["wer_utterances"] == 0
    assert list(result) == list(WordErrorRate().compute())


def test_name_prefixes_every_key():
    metric = CharacterErrorRate(prefix="test_cer")
    metric.update(["ab"], ["ab"])
    assert set(metric.compute()) == {
        "test_cer", "test_cer_substitutions", "test_cer_deletions", "test_cer_insertions",
        "test_cer_reference_characters", "test_cer_utterances", "test_cer_sentence_error_rate",
    }


@pytest.mark.parametrize(
    ("predictions", "targets", "message"),
    [
        (["a"], ["a", "b"], "1 hypotheses for 2 references"),
        ("a b", "a b", "list of strings"),
        ([1], ["a"], "must be strings"),
        (["a"], [None], "must be strings"),
    ],
)
def test_bad_inputs_raise_value_error(predictions, targets, message):
    with pytest.raises(ValueError, match=message):
        WordErrorRate().update(predictions, targets)


def test_unknown_unit_raises():
    with pytest.raises(ValueError, match="unit must be one of"):
        error_counts(["a"], ["a"], unit="phone")  # type: ignore[arg-type]
