"""Word and character error rates, from edit operations summed over a corpus.

The error rate of a test set is ``(S + D + I) / N``: substitutions, deletions
and insertions of the best (Levenshtein) alignment of each hypothesis to its
reference, summed over all utterances, divided by the number of reference units
(words or characters) ``N = H + S + D`` (``H`` = hits). It is a corpus-level
ratio, not the mean of per-utterance ratios: a one-word utterance with one error
weighs as much as one error in a long utterance, as in NIST sclite and jiwer.
Only the counts are kept, so they add up across batches and processes and
:meth:`~cadence.metrics.base.Metric.sync` is exact.

Units:

- ``"word"``: ``text.split()``, words separated by any run of whitespace;
  leading and trailing whitespace is ignored. This is jiwer's default word
  transform (``wer_default``) whenever words are separated by spaces or by runs
  of two or more whitespace characters; it differs only for a single tab,
  newline or other non-space whitespace character between two words, which
  jiwer keeps inside one word and cadence treats as a separator.
- ``"character"``: the Unicode code points of ``text.strip()``: leading and
  trailing whitespace is removed and every other character counts, spaces
  between words included (each one of several consecutive spaces too). This is
  exactly jiwer's default character transform (``cer_default``), so CER equals
  ``jiwer.cer``. Nothing is lower-cased or normalized: do that beforehand.

The alignment comes from ``rapidfuzz.distance.Levenshtein.editops``, the same
routine jiwer uses, so when several alignments have the same cost the split of
the errors into S, D and I is the same as jiwer's, not only the total.
(Words are compared by rapidfuzz through their Python hash; two different words
share a 64-bit hash with probability about 2**-64, far below anything that
would show in a WER.)

Conventions:

- An empty reference is allowed: its hypothesis words are all insertions and
  the utterance adds 0 to ``N``. The rate is NaN only when the whole corpus has
  no reference unit (jiwer returns the number of insertions there instead).
- ``<name>_sentence_error_rate`` is the fraction of utterances with at least
  one error (S + D + I > 0).
- ``compute()`` before any update returns the usual keys: NaN rates, zero counts.

>>> metric = WordErrorRate()
>>> metric.update(["the cat sat", "hello word"], targets=["the cat sat down", "hello world"])
>>> for key, value in metric.compute().items():
...     print(key, value)
wer 0.3333333333333333
wer_substitutions 1
wer_deletions 1
wer_insertions 0
wer_reference_words 6
wer_utterances 2
wer_sentence_error_rate 1.0
>>> utterance_errors("abc", "abd", unit="character")
{'substitutions': 1, 'deletions': 0, 'insertions': 0, 'hits': 2, 'reference_units': 3}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Literal, NamedTuple

import torch
from rapidfuzz.distance import Levenshtein

from cadence.metrics.base import Metric
from cadence.registry import METRICS

Unit = Literal["word", "character"]

# What one utterance turns into before alignment: a list of words, or the (stripped)
# string itself, since rapidfuzz aligns a str character by character at C speed.
UNIT_SPLITTERS: dict[str, Callable[[str], Sequence[Hashable]]] = {
    "word": str.split,
    "character": str.strip,
}


class EditOperations(NamedTuple):
    """Edit operations of one alignment of a hypothesis to a reference."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int


class ErrorCounts(NamedTuple):
    """Edit operations summed over utterances, plus what the rates divide by."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_units: int
    utterances: int
    utterances_with_errors: int


def edit_operations(reference_units: Sequence[Hashable], hypothesis_units: Sequence[Hashable]) -> EditOperations:
    """Substitutions, deletions, insertions and hits turning the reference into the hypothesis.

    Units are any hashables: the characters of a string, a list of words, token ids.

    >>> edit_operations("kitten".split(), "sitting kitten".split())
    EditOperations(substitutions=0, deletions=0, insertions=1, hits=1)
    >>> edit_operations("kitten", "sitting")
    EditOperations(substitutions=2, deletions=0, insertions=1, hits=4)
    """
    reference_length, hypothesis_length = len(reference_units), len(hypothesis_units)
    if reference_units == hypothesis_units:
        return EditOperations(0, 0, 0, reference_length)
    operations = Levenshtein.editops(reference_units, hypothesis_units)
    # Only the deletions need counting: the lengths and the total fix the other two,
    # and one list.count in C is faster than three comparisons per operation in Python.
    deletions = [operation.tag for operation in operations].count("delete")
    insertions = deletions + hypothesis_length - reference_length
    substitutions = len(operations) - deletions - insertions
    return EditOperations(substitutions, deletions, insertions, reference_length - substitutions - deletions)


def error_counts(references: Sequence[str], hypotheses: Sequence[str], unit: Unit = "word") -> ErrorCounts:
    """Edit operations of each hypothesis against its reference, summed over all pairs.

    >>> counts = error_counts(["a b c", "d"], ["a x c", "d e"])
    >>> counts.substitutions, counts.insertions, counts.reference_units
    (1, 1, 4)
    """
    split = _splitter(unit)
    _check_texts(references, hypotheses)
    substitutions = deletions = insertions = hits = reference_units = utterances_with_errors = 0
    for index, (reference, hypothesis) in enumerate(zip(references, hypotheses)):
        try:
            if reference == hypothesis:
                # Most utterances of a decent model are exact: skip the hypothesis split and the alignment.
                length = len(split(reference))
                hits += length
                reference_units += length
                continue
            reference_units_of_pair, hypothesis_units_of_pair = split(reference), split(hypothesis)
        except TypeError:  # str.split / str.strip called on something that is not a str
            raise ValueError(
                f"references and hypotheses must be strings; pair {index} is "
                f"{type(reference).__name__} and {type(hypothesis).__name__}"
            ) from None
        pair = edit_operations(reference_units_of_pair, hypothesis_units_of_pair)
        substitutions += pair.substitutions
        deletions += pair.deletions
        insertions += pair.insertions
        hits += pair.hits
        reference_units += len(reference_units_of_pair)
        utterances_with_errors += (pair.substitutions + pair.deletions + pair.insertions) > 0
    return ErrorCounts(
        substitutions, deletions, insertions, hits, reference_units, len(references), utterances_with_errors
    )


def utterance_errors(reference: str, hypothesis: str, unit: Unit = "word") -> dict[str, int]:
    """The edit operations of one utterance, as a dict (for per-utterance reports).

    >>> utterance_errors("one two three", "one three three four")
    {'substitutions': 1, 'deletions': 0, 'insertions': 1, 'hits': 2, 'reference_units': 3}
    """
    if not isinstance(reference, str) or not isinstance(hypothesis, str):
        raise ValueError(
            f"reference and hypothesis must be strings, got {type(reference).__name__} "
            f"and {type(hypothesis).__name__}"
        )
    counts = error_counts([reference], [hypothesis], unit)
    return {
        "substitutions": counts.substitutions,
        "deletions": counts.deletions,
        "insertions": counts.insertions,
        "hits": counts.hits,
        "reference_units": counts.reference_units,
    }


def _splitter(unit: str) -> Callable[[str], Sequence[Hashable]]:
    if unit not in UNIT_SPLITTERS:
        raise ValueError(f"unit must be one of {sorted(UNIT_SPLITTERS)}, got {unit!r}")
    return UNIT_SPLITTERS[unit]


def _check_texts(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    # A lone string is a Sequence[str] too, but counting its characters as utterances is never meant.
    for what, texts in (("references", references), ("hypotheses", hypotheses)):
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ValueError(f"{what} must be a list of strings (one per utterance), got {type(texts).__name__}")
    if len(references) != len(hypotheses):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses for {len(references)} references; "
            "they must pair up one to one"
        )


class ErrorRate(Metric):
    """Counts edit operations between hypothesis and reference texts; see the module docstring.

    ``update(predictions, targets)`` takes the hypotheses and the references, as
    lists of strings of the same length. ``prefix`` replaces the metric's name in every key
    (``test_wer``, ...). ``compute()`` gives, for the name ``wer``:
    ``wer`` (a fraction, not a percentage), ``wer_substitutions``,
    ``wer_deletions``, ``wer_insertions``, ``wer_reference_<units>``,
    ``wer_utterances`` and ``wer_sentence_error_rate``.
    """

    unit: Unit = "word"
    unit_plural: str = "words"

    def __init__(self, prefix: str | None = None) -> None:
        # Not called "name": in a recipe, "name" is the registered metric (wer, cer).
        super().__init__()
        if prefix is not None:
            if not isinstance(prefix, str) or not prefix:
                raise ValueError(f"{type(self).__name__}: prefix must be a non-empty string, got {prefix!r}")
            self.name = prefix
        for key in ErrorCounts._fields:
            self.add_count(key, torch.zeros((), dtype=torch.int64))

    def update(self, predictions: Sequence[str], targets: Sequence[str]) -> None:  # type: ignore[override]
        """Add a batch: ``predictions`` are hypothesis texts, ``targets`` the reference texts."""
        try:
            counts = error_counts(targets, predictions, self.unit)
        except ValueError as error:
            raise ValueError(f"{type(self).__name__}.update: {error}") from None
        for key, value in zip(ErrorCounts._fields, counts):
            self.counts[key] += value

    def compute(self) -> dict[str, float]:
        counts = {key: int(count) for key, count in self.counts.items()}
        errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
        name = self.name
        return {
            name: _ratio(errors, counts["reference_units"]),
            f"{name}_substitutions": counts["substitutions"],
            f"{name}_deletions": counts["deletions"],
            f"{name}_insertions": counts["insertions"],
            f"{name}_reference_{self.unit_plural}": counts["reference_units"],
            f"{name}_utterances": counts["utterances"],
            f"{name}_sentence_error_rate": _ratio(counts["utterances_with_errors"], counts["utterances"]),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@METRICS.register("wer")
class WordErrorRate(ErrorRate):
    """Word error rate (WER); words are ``text.split()``.

    >>> metric = WordErrorRate()
    >>> metric.update(["a b"], ["a b c"])
    >>> round(metric.compute()["wer"], 4), metric.compute()["wer_deletions"]
    (0.3333, 1)
    """

    name = "wer"
    unit = "word"
    unit_plural = "words"


@METRICS.register("cer")
class CharacterErrorRate(ErrorRate):
    """Character error rate (CER); characters of ``text.strip()``, inner spaces included.

    >>> metric = CharacterErrorRate()
    >>> metric.update(["ab c"], ["abc"])
    >>> metric.compute()["cer_insertions"], metric.compute()["cer_reference_characters"]
    (1, 3)
    """

    name = "cer"
    unit = "character"
    unit_plural = "characters"


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan
