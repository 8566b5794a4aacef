"""The audio pipeline through the recipe path: bad audio quarantined, a feature pipeline with
global statistics and SpecAugment, the train loader's position in checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile
import yaml

from cadence.checkpoint.format import load_checkpoint
from cadence.data.manifest import ManifestEntry, write_manifest
from cadence.errors import DataError
from cadence.commands.train import train_recipe

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_corpus(folder: Path, fsdd_root: Path, bad_files: dict[str, Path]) -> dict[str, Path]:
    """Train: 200 real recordings plus broken files; valid/test: 50 real recordings each."""
    recordings = sorted((fsdd_root / "recordings").glob("*.wav"))
    entry = lambda path: ManifestEntry(id=path.stem, audio=path, duration=soundfile.info(path).duration, label=WORDS[int(path.name[0])])
    splits = {"train": [entry(path) for path in recordings[::15]], "valid": [entry(path) for path in recordings[7::60]],
              "test": [entry(path) for path in recordings[11::60]]}
    splits["train"] += [ManifestEntry(id=case, audio=bad_files[case], duration=0.5, label="one") for case in ("zero_bytes", "all_zeros")]
    paths = {}
    for split, entries in splits.items():
        paths[split] = folder / f"{split}.jsonl"
        write_manifest(paths[split], entries)
    return paths


def recipe(folder: Path, manifests: dict[str, Path], **data) -> Path:
    document = {
        "name": "pipeline-test",
        "data": {"name": "manifests", "sample_rate": 8000, "preload": True, "train": str(manifests["train"]),
                 "valid": str(manifests["valid"]), "test": str(manifests["test"]),
                 "batching": {"max_frames": 2000, "max_seqs": 16}, **data},
        "features": [{"name": "log_mel"}, {"name": "normalize", "mode": "global"},
                     {"name": "spec_augment", "freq_width": 6, "time_width": 8}],
        "model": {"name": "cnn_classifier", "channels": 16, "layers": 2},
        "trainer": {"max_epochs": 2, "progress_bar": False},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def corpus(tmp_path, fsdd_root, bad_audio_files):
    return write_corpus(tmp_path / "corpus", fsdd_root, bad_audio_files)


def test_training_quarantines_bad_audio_and_records_the_pipeline(tmp_path, corpus):
    directory = tmp_path / "run"
    results = train_recipe(recipe(tmp_path, corpus, max_skip_rate=0.05), ["trainer.progress_bar=false"], exp_dir=directory)
    records = [json.loads(line) for line in (directory / "quarantine.jsonl").read_text().splitlines()]
    assert {record["id"]: record["reason"] for record in records} == {"zero_bytes": "unreadable", "all_zeros": "silent"}
    statistics = json.loads((directory / "data" / "feature_statistics.json").read_text())
    assert statistics["features.1"]["num_features"] == 40 and statistics["features.1"]["frames"] > 0

    state, _ = load_checkpoint(Path(results["final_checkpoint"]))
    assert "features.stages.1.mean" in state["task"]  # global statistics travel with the weights
    assert state["train_data"]["cursor"] == 0 and state["train_data"]["skipped_in_epoch"] == 0  # at an epoch's end
    assert 1 <= state["train_data"]["epoch"] <= 2


def test_a_corpus_over_the_skip_budget_stops_with_a_clear_error(tmp_path, corpus):
    directory = tmp_path / "run"
    with pytest.raises(DataError, match=r"2 of 202 utterances planned this epoch had unusable audio.*quarantine\.jsonl"):
        train_recipe(recipe(tmp_path, corpus, max_skip_rate=0.005), [], exp_dir=directory)
    assert len((directory / "quarantine.jsonl").read_text().splitlines()) == 2  # what was found is kept


def test_bad_audio_in_evaluation_data_is_an_error_naming_the_file(tmp_path, corpus, bad_audio_files):
    write_manifest(corpus["valid"], [ManifestEntry(id="broken", audio=bad_audio_files["header_only"], duration=0.5, label="one")])
    with pytest.raises(DataError, match=r"header_only\.wav: empty"):
        train_recipe(recipe(tmp_path, corpus), [], exp_dir=tmp_path / "run")
