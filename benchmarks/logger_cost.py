"""What the MLflow logger costs against TensorBoard alone (issue 15).

The FSDD digit recipe (`recipes/fsdd/digits.yaml`) trains twice a round, with ``experiment.loggers:
[tensorboard]`` and with ``[tensorboard, mlflow]`` into a local MLflow store (SQLite, in a
temporary folder), the rounds alternating so that a slower spell of the machine hits both
alike. Each ``fit`` is timed whole, the MLflow run's end included (it waits until every metric
sent in the background is in the store, then uploads the artifacts); the report gives the
median over rounds of the MLflow run's time over the TensorBoard run's. Within the MLflow runs,
the calls the loop waits for are timed where they happen: ``Experiment.log_metrics`` (metrics.jsonl,
TensorBoard and MLflow) and ``MLflowLogger.log_metrics`` alone.

``trainer.log_every=1`` logs a line at every update, the most a run can log (the recipe's own
setting logs far less). Nothing else may run meanwhile (see BENCHMARKS.md).

    python benchmarks/logger_cost.py [--log-every 1] [--epochs 3] [--rounds 5]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from timing import timed  # benchmarks/timing.py, beside this script

REPOSITORY = Path(__file__).resolve().parents[1]
RECIPE = REPOSITORY / "recipes" / "fsdd" / "digits.yaml"


def one_run(log_every: int, epochs: int, folder: Path, with_mlflow: bool) -> dict:
    from cadence.commands.train import prepare_run
    from cadence.config.build import build, build_loggers
    from cadence.config.resolve import resolve
    from cadence.config.schema import load_recipe
    from cadence.experiment import Experiment

    folder.mkdir(parents=True)
    loggers = f"[tensorboard, {{name: mlflow, tracking_uri: 'sqlite:///{folder}/mlflow.db'}}]" if with_mlflow else "[tensorboard]"
    overrides = [f"trainer.log_every={log_every}", f"trainer.max_epochs={epochs}", "trainer.progress_bar=false",
                 f"experiment.loggers={loggers}"]
    resolved = resolve(load_recipe(RECIPE, overrides))
    prepare_run(resolved)
    trackers = build_loggers(resolved)
    spent: dict[str, list[float]] = {"all": [], "mlflow": []}
    for tracker in trackers:
        timed(tracker, "log_metrics", spent["mlflow"])
    with Experiment(folder / "run", loggers=trackers) as experiment:
        timed(experiment, "log_metrics", spent["all"])
        built = build(resolved, experiment)
        started = time.perf_counter()
        results = built.trainer.fit(built.data.train, built.data.valid, built.data.test)
        fit = time.perf_counter() - started
    figures = {"fit_s": round(fit, 3), "updates": results["global_step"], "lines": len(spent["all"]),
               "logging_ms_per_line": round(1000 * sum(spent["all"]) / len(spent["all"]), 3)}
    if with_mlflow:
        figures["mlflow_ms_per_line"] = round(1000 * sum(spent["mlflow"]) / len(spent["mlflow"]), 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-every", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="cadence-logger-cost-") as root:
        for index in range(arguments.rounds):
            rounds.append({name: one_run(arguments.log_every, arguments.epochs, Path(root) / f"{index}-{name}", name == "mlflow")
                           for name in ("tensorboard", "mlflow")})
    ratios = [each["mlflow"]["fit_s"] / each["tensorboard"]["fit_s"] for each in rounds]
    json.dump({
        "benchmark": "logger_cost", "recipe": str(RECIPE.relative_to(REPOSITORY)), "cpu_count": os.cpu_count(),
        "log_every": arguments.log_every, "rounds": rounds,
        "fit_time_ratio_mlflow_over_tensorboard": [round(ratio, 4) for ratio in ratios],
        "fit_time_ratio_median": round(statistics.median(ratios), 4),
    }, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
