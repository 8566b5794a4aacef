"""What evaluating more often costs (issue 15): WER/CER on training batches of a text task, and
validation inside the epoch, as a share of the epoch's training time.

The DeepSpeech2 recipe (`recipes/fsdd/asr_ds2.yaml`) trains one epoch of FSDD connected digits
with ``trainer.train_metrics_every`` and ``trainer.validate_every_steps`` both on. The Trainer's
own methods are timed where they run, in the same epoch as the training they are compared with
(two runs of an epoch differ by more than the 5% in question on this machine):

- ``Trainer.score_training_batch``: the greedy decoding of the Nth update's batch and the
  metrics' update (the other updates only pass through it);
- ``Trainer.run_validation`` inside the epoch (the epoch's own validation is not part of it).

The training time is the epoch's (``train/epoch_time_s``) less the validations inside it.
Issue 15's target for the training WER: at most 5% of the training time. Each ``--seeds``
value is one run; nothing else may run meanwhile (see BENCHMARKS.md).

    python benchmarks/evaluation_cost.py [--seeds 0 1 2] [--train-metrics-every 10] [--validate-every 25]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from timing import timed  # benchmarks/timing.py, beside this script

REPOSITORY = Path(__file__).resolve().parents[1]
RECIPE = REPOSITORY / "recipes" / "fsdd" / "asr_ds2.yaml"
TARGET_TRAIN_WER_SHARE = 0.05


def one_epoch(seed: int, overrides: list[str], root: Path) -> dict:
    from cadence.commands.train import prepare_run
    from cadence.config.build import build
    from cadence.config.resolve import resolve
    from cadence.config.schema import load_recipe
    from cadence.experiment import Experiment

    resolved = resolve(load_recipe(RECIPE, [*overrides, f"seed={seed}", "trainer.max_epochs=1", "trainer.progress_bar=false"]))
    prepare_run(resolved)
    with Experiment(root / f"seed{seed}", tensorboard=False) as experiment:
        built = build(resolved, experiment)
        trainer = built.trainer
        scoring, validations = [], []
        timed(trainer, "score_training_batch", scoring)
        timed(trainer, "run_validation", validations)
        trainer.fit(built.data.train, built.data.valid)
        lines = [json.loads(line) for line in (experiment.directory / "metrics.jsonl").read_text().splitlines()]
    epoch_time = next(line for line in lines if line["split"] == "epoch")["train/epoch_time_s"]
    inside = validations[:-1]  # the last is the epoch's own, after the timed epoch
    training = epoch_time - sum(inside)
    decoded = sum("train/wer" in line for line in lines)
    return {
        "seed": seed,
        "updates": trainer.state.global_step,
        "training_s": round(training, 2),
        "train_wer_logged": decoded,
        "scoring_s": round(sum(scoring), 3),
        "train_wer_percent": round(100 * sum(scoring) / training, 2),
        "validations_inside": len(inside),
        "validation_s_each": round(statistics.median(inside), 2) if inside else None,
        "validation_percent_each": round(100 * statistics.median(inside) / training, 2) if inside else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-metrics-every", type=int, default=10)
    parser.add_argument("--validate-every", type=int, default=25)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides (e.g. data.max_eval_utterances=200)")
    arguments = parser.parse_args()
    overrides = [f"trainer.train_metrics_every={arguments.train_metrics_every}",
                 f"trainer.validate_every_steps={arguments.validate_every}", *arguments.overrides]
    with tempfile.TemporaryDirectory(prefix="cadence-evaluation-cost-") as root:
        runs = [one_epoch(seed, overrides, Path(root)) for seed in arguments.seeds]
    share = statistics.median(run["train_wer_percent"] for run in runs)
    report = {
        "benchmark": "evaluation_cost",
        "recipe": str(RECIPE.relative_to(REPOSITORY)),
        "overrides": overrides,
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "train_wer_percent_median": share,
        "validation_percent_each_median": statistics.median(run["validation_percent_each"] or 0.0 for run in runs),
        "meets_target": share <= 100 * TARGET_TRAIN_WER_SHARE,
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
