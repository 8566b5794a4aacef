"""Word boundaries from CTC forced alignment, checked against where connected digits were joined.

Trains the DeepSpeech2 CTC recipe (``recipes/fsdd/asr_ds2.yaml``) for a few epochs, force-aligns
every utterance of the connected-digits TEST split to its reference words with the trained
model (:func:`cadence.decoding.force_align_batch`), turns the token spans into seconds, and
counts the word boundaries that fall inside the digital silence the generator put between
two digit recordings (``segments/test.jsonl``), widened by one output frame on each side
(:func:`cadence.decoding.score_word_boundaries`).

A baseline gives the figure its meaning: the same number of boundaries spread uniformly in
time between the start of the first aligned word and the end of the last (so the baseline
knows where the speech starts and ends, and only the alignment's placement inside is tested).

    python benchmarks/alignment.py [--epochs 3] [--keep DIR] [key=value ...]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import cadence
from cadence.commands.train import train_recipe
from cadence.config.build import build_data
from cadence.config.resolve import resolve
from cadence.config.schema import validate_recipe
from cadence.decoding import force_align_batch, score_word_boundaries, spans_to_seconds

REPOSITORY = Path(__file__).resolve().parents[1]
RECIPE = REPOSITORY / "recipes" / "fsdd" / "asr_ds2.yaml"


def seconds_per_output_frame(task: torch.nn.Module) -> float:
    """The model's total time stride times the features' hop, in seconds."""
    framing = next(module for module in task.features.modules() if hasattr(module, "hop_length"))
    time_stride = math.prod(task.model.time_strides)  # DeepSpeech2 spreads its stride over its convolutions
    if time_stride != task.config["model"]["time_stride"]:
        raise RuntimeError(f"the model subsamples by {time_stride}, its config says {task.config['model']['time_stride']}")
    return time_stride * framing.hop_length / framing.sample_rate


def uniform_spans(start: float, end: float, words: int) -> list[tuple[float, float]]:
    """``words`` equal spans tiling ``[start, end)``."""
    step = (end - start) / words
    return [(start + word * step, start + (word + 1) * step) for word in range(words)]


def rebuild_test_split(task: torch.nn.Module, work_dir: Path):
    """The run's test split, rebuilt from its saved config (as ``cadence eval`` does), and its manifest."""
    config = validate_recipe(task.config)
    config.data.model_extra["preload"] = False  # one split is read, once
    data = build_data(resolve(config), work_dir)
    if data.facts["tokenizer"].to_dict() != task.tokenizer.to_dict():
        raise RuntimeError("the data now gives another tokenizer than the model was trained with")
    return data.test, data.manifests["test"]


@torch.no_grad()
def align_test_split(task: torch.nn.Module, loader, segments: dict[str, list[dict]], seconds_per_frame: float) -> dict:
    counts = {"inside": 0, "baseline_inside": 0, "boundaries": 0, "utterances": 0}
    for batch in loader:
        log_probs, output_lengths = task.forward_batch(batch)  # [B, T', C], [B]; the task is in eval mode
        classes, lengths = task.target_classes(batch)  # token id + 1: the columns of log_probs, blank 0
        targets = [row[:length] for row, length in zip(classes.tolist(), lengths.tolist())]
        for key, alignment in zip(batch.ids, force_align_batch(log_probs, output_lengths, targets, blank=0)):
            words = spans_to_seconds(alignment.spans, seconds_per_frame)  # word tokenizer: one token per digit
            score = score_word_boundaries(segments[key], words, seconds_per_frame)
            uniform = uniform_spans(words[0][0], words[-1][1], len(words))
            baseline = score_word_boundaries(segments[key], uniform, seconds_per_frame)
            counts["inside"] += score.boundaries_inside
            counts["baseline_inside"] += baseline.boundaries_inside
            counts["boundaries"] += score.boundaries
            counts["utterances"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--keep", help="keep the experiment folder here (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for the training run")
    arguments = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cadence-alignment-") as temporary:
        exp_dir = Path(arguments.keep or temporary) / "asr_ds2"
        overrides = [f"trainer.max_epochs={arguments.epochs}", "trainer.progress_bar=false", *arguments.overrides]
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON line only
            results = train_recipe(RECIPE, overrides, exp_dir)
            task = cadence.load(exp_dir)  # the best valid checkpoint, the one the run tested
            loader, manifest = rebuild_test_split(task, Path(temporary) / "data")
        seconds_per_frame = seconds_per_output_frame(task)
        with open(Path(manifest).parent / "segments" / "test.jsonl", encoding="utf-8") as lines:
            segments = {record["id"]: record["segments"] for record in map(json.loads, lines)}
        aligning = time.perf_counter()
        counts = align_test_split(task, loader, segments, seconds_per_frame)
    report = {
        "benchmark": "alignment",
        "epochs": arguments.epochs,
        "test_wer": round(results["test"]["test/wer"], 5),
        "boundaries_inside": counts["inside"],
        "boundaries": counts["boundaries"],
        "share_inside": round(counts["inside"] / counts["boundaries"], 4),
        "baseline_uniform_boundaries_inside": counts["baseline_inside"],
        "baseline_uniform_share_inside": round(counts["baseline_inside"] / counts["boundaries"], 4),
        "utterances": counts["utterances"],
        "seconds_per_frame": seconds_per_frame,
        "align_seconds": round(time.perf_counter() - aligning, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
