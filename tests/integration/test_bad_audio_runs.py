"""Non-finite audio end to end, on a tiny real FSDD training: quarantined in training, an
error naming the file in evaluation (`cadence eval`), listed by `cadence data check`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from cadence.commands.cli import main
from cadence.commands.inference import evaluate_checkpoint
from cadence.commands.train import train_recipe
from cadence.data.manifest import ManifestEntry, write_manifest
from cadence.errors import DataError

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def entry(path: Path) -> ManifestEntry:
    return ManifestEntry(id=path.stem, audio=path, duration=soundfile.info(path).duration, label=WORDS[int(path.name[0])])


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory, fsdd_root: Path):
    """A one-epoch run on 40 recordings plus a float WAV full of NaN; (experiment folder,
    manifests, the NaN file, results)."""
    folder = tmp_path_factory.mktemp("nan_run")
    recordings = sorted((fsdd_root / "recordings").glob("*.wav"))
    nan_file = folder / "audio" / "1_nan.wav"
    nan_file.parent.mkdir()
    soundfile.write(nan_file, np.full(4000, math.nan, dtype=np.float32), 8000, subtype="FLOAT")
    splits = {
        "train": [entry(path) for path in recordings[::75]] + [entry(nan_file)],
        "valid": [entry(path) for path in recordings[7::300]],
        "test": [entry(path) for path in recordings[11::300]],
    }
    manifests = {split: folder / f"{split}.jsonl" for split in splits}
    for split, entries in splits.items():
        write_manifest(manifests[split], entries)
    recipe = {
        "name": "nan-audio",
        "data": {"name": "manifests", "sample_rate": 8000, "max_skip_rate": 0.05, "batching": {"max_frames": 2000, "max_seqs": 16},
                 **{split: str(path) for split, path in manifests.items()}},
        "features": {"name": "log_mel"},
        "model": {"name": "cnn_classifier", "channels": 8, "layers": 1},
        "trainer": {"max_epochs": 1, "progress_bar": False},
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    directory = folder / "run"
    results = train_recipe(folder / "recipe.yaml", [], exp_dir=directory)
    return directory, manifests, nan_file, results


def test_training_quarantines_the_nan_file_and_every_loss_stays_finite(nan_run):
    directory, manifests, nan_file, results = nan_run
    [record] = [json.loads(line) for line in (directory / "quarantine.jsonl").read_text().splitlines()]
    assert (record["id"], record["reason"]) == ("1_nan", "non_finite")
    assert str(nan_file) in record["message"] and "4000 of 4000 samples are not finite" in record["message"]
    # train/loss is the epoch's mean: one NaN batch would make it NaN.
    losses = [
        value for line in (directory / "metrics.jsonl").read_text().splitlines()
        for name, value in json.loads(line).items() if name.endswith("/loss")
    ]
    assert {"train/loss", "val/loss", "test/loss"} <= {
        name for line in (directory / "metrics.jsonl").read_text().splitlines() for name in json.loads(line)
    }
    assert all(math.isfinite(value) for value in losses)
    assert all(math.isfinite(value) for value in results["test"].values() if isinstance(value, float))


def test_evaluation_with_the_nan_file_is_an_error_naming_it(nan_run, capsys):
    directory, manifests, nan_file, _ = nan_run
    with manifests["test"].open("a") as lines:
        lines.write(json.dumps({"id": "1_nan", "audio": str(nan_file), "duration": 0.5, "label": "one"}) + "\n")
    with pytest.raises(DataError, match=rf"{nan_file}: non_finite: 4000 of 4000 samples are not finite"):
        evaluate_checkpoint(directory, "test", device="cpu")
    assert main(["eval", str(directory), "--split", "test"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"cadence: error: {nan_file}: non_finite" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_data_check_lists_the_nan_file(nan_run, capsys):
    _, manifests, nan_file, _ = nan_run
    assert main(["data", "check", str(manifests["train"])]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["bad_by_reason"] == {"non_finite": 1}
    assert [(item["id"], item["path"]) for item in summary["bad_utterances"]] == [("1_nan", str(nan_file))]
    assert f"1_nan: {nan_file}: non_finite" in captured.err
