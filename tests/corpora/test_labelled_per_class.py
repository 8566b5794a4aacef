"""Few-label training data: ``data.labelled_per_class`` draws N utterances of each class, by seed."""

from __future__ import annotations

from collections import Counter

import pytest

from cadence.corpora.builders import fsdd
from cadence.errors import ConfigError, DataError


def training_utterances(tmp_path, seed: int, **options) -> list[tuple[str, str]]:
    bundle = fsdd(tmp_path / f"work-{seed}", seed, None, **options)
    manifest = bundle.train.dataset.manifest
    return [(manifest.entry(index).id, manifest.entry(index).label) for index in range(len(manifest))]


@pytest.mark.parametrize("task", ["digits", "speakers"])
def test_each_class_gets_exactly_n_training_utterances_drawn_by_the_seed(task, tmp_path, fsdd_root) -> None:
    chosen = training_utterances(tmp_path, 0, task=task, labelled_per_class=3)
    counts = Counter(label for _, label in chosen)
    assert len(counts) == (10 if task == "digits" else 6) and set(counts.values()) == {3}
    assert training_utterances(tmp_path, 0, task=task, labelled_per_class=3) == chosen  # the same seed, the same utterances
    assert training_utterances(tmp_path, 1, task=task, labelled_per_class=3) != chosen
    # Validation and test keep all theirs.
    bundle = fsdd(tmp_path / "all", 0, None, task=task, labelled_per_class=3)
    assert len(bundle.valid.dataset) == 300 and len(bundle.test.dataset) == 300


def test_more_than_a_class_holds_or_a_task_without_labels_is_refused(tmp_path, fsdd_root) -> None:
    with pytest.raises(DataError, match="fewer than labelled_per_class = 500"):
        fsdd(tmp_path / "many", 0, None, task="speakers", labelled_per_class=500)
    with pytest.raises(ConfigError, match="needs target: label"):
        fsdd(tmp_path / "text", 0, None, task="connected-digits", labelled_per_class=2, corpus_sizes=[60, 12, 12])
