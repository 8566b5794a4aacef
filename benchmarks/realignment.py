"""RETURNN's realignment pipeline on FSDD connected digits: what each stage of
``recipes/fsdd/asr_ds2_realign.yaml`` achieves.

Trains the recipe (DeepSpeech2: CTC, then realign + frame-wise cross-entropy, then realign
again + frame-wise cross-entropy) and reports, per stage, the task it trained, its epochs,
its best validation WER (and the epoch), the validation frame accuracy at its last epoch
(frame-wise stages, against that stage's alignments) and how long its realignment took;
then the test WER of the best model of the whole run (by validation WER), which ``fit``
restores and tests.

    python benchmarks/realignment.py [--seed 0] [--keep DIR] [key=value ...]

Overrides change the run (``trainer.max_epochs=3 stages.0.epochs=1 stages.1.epochs=1`` for
a quick look). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from cadence.commands.train import train_recipe
from cadence.config.resolve import resolve
from cadence.config.schema import apply_overrides, load_yaml, validate_recipe
from cadence.config.stages import stage_starts

REPOSITORY = Path(__file__).resolve().parents[1]
RECIPE = REPOSITORY / "recipes" / "fsdd" / "asr_ds2_realign.yaml"
REALIGNED = re.compile(r"realign: aligned .* with the model of epoch (\d+) in ([\d.]+) s")


def stage_plan(overrides: list[str]) -> list[dict]:
    """Each stage's task and 1-based epochs, as the run will train them."""
    recipe = resolve(validate_recipe(apply_overrides(load_yaml(RECIPE), overrides)))
    config, max_epochs = recipe.config, recipe.trainer["max_epochs"]
    starts = stage_starts(config.stages, max_epochs)
    ends = [*starts[1:], max_epochs]
    # A realign stage trains the task its function names (framewise), not the recipe's.
    task_of = lambda stage: "framewise" if stage.function == "realign" else stage.overrides.get("task.name", config.task.name)
    return [{"stage": index + 1, "task": task_of(stage), "function": stage.function,
             "epochs": [start + 1, end]} for index, (stage, start, end) in enumerate(zip(config.stages, starts, ends))]


def summarize(stages: list[dict], directory: Path) -> list[dict]:
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    epochs = {line["epoch"] + 1: line for line in lines if line["split"] == "epoch"}  # 1-based, as logged
    realigned = {int(epoch) + 1: float(seconds) for epoch, seconds in REALIGNED.findall((directory / "train.log").read_text())}
    for stage in stages:
        first, last = stage["epochs"]
        trained = [epochs[epoch] for epoch in range(first, last + 1) if epoch in epochs]
        if not trained:
            continue
        best = min(trained, key=lambda line: line["val/wer"])
        stage["best_val_wer"] = round(best["val/wer"], 5)
        stage["best_epoch"] = best["epoch"] + 1
        accuracy = trained[-1].get("val/frame_accuracy")  # None (NaN) in a CTC stage
        stage["val_frame_accuracy"] = None if accuracy is None else round(accuracy, 5)
        stage["realign_seconds"] = realigned.get(first)
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the experiment folder here (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for the training run")
    arguments = parser.parse_args()
    overrides = [f"seed={arguments.seed}", "trainer.progress_bar=false", *arguments.overrides]
    stages = stage_plan(overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cadence-realignment-") as temporary:
        exp_dir = Path(arguments.keep or temporary) / "asr_ds2_realign"
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
            results = train_recipe(RECIPE, overrides, exp_dir)
        wall = time.perf_counter() - started
        report = {
            "benchmark": "realignment",
            "seed": arguments.seed,
            "overrides": arguments.overrides,
            "stages": summarize(stages, exp_dir),
            "best_epoch": results["best_epoch"],
            "test_wer": round(results["test"]["test/wer"], 5),
            "test_word_errors": {kind: results["test"][f"test/wer_{kind}"] for kind in ("substitutions", "deletions", "insertions")},
            "test_reference_words": results["test"]["test/wer_reference_words"],
            "wall_s": round(wall, 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
