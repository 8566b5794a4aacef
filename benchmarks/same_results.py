"""Does a refactoring change what training computes? Train the shipped recipes with two
checkouts of cadence and compare the results bit for bit.

Each recipe is trained (shortened by an override) by a fresh ``cadence train`` process of
each checkout, ``PYTHONPATH`` pointing at it; then the final checkpoints' weights, optimizer
and schedule states are compared value by value (``cadence.commands.verify.differences``), and
so are the validation history and the test metrics in ``results.json``.

    python benchmarks/same_results.py --baseline /path/to/older/checkout [--work-dir DIR]

Prints one JSON object; exits with 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cadence.checkpoint.format import load_checkpoint
from cadence.commands.verify import differences

REPOSITORY = Path(__file__).resolve().parents[1]
# Recipe -> the override that keeps its run short (and identical in both checkouts).
RECIPES = {
    "digits": "trainer.max_epochs=3",
    "asr_ds2": "trainer.max_steps=30",
    "asr_las": "trainer.max_steps=30",
    "asr_tds": "trainer.max_steps=30",
}
COMPARED = ("task", "optimizer", "scheduler")


def train(checkout: Path, recipe: str, override: str, exp_dir: Path) -> dict:
    command = [sys.executable, "-m", "cadence", "train", str(checkout / "recipes" / "fsdd" / f"{recipe}.yaml"), override,
               "trainer.progress_bar=false", "--exp-dir", str(exp_dir)]
    # From a neutral folder, so that only PYTHONPATH decides which cadence runs.
    subprocess.run(command, env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=tempfile.gettempdir(), check=True,
                   capture_output=True, text=True)
    return json.loads((exp_dir / "results.json").read_text())


def final_state(exp_dir: Path) -> dict:
    newest = sorted((exp_dir / "checkpoints").glob("step-*"))[-1]
    state, _ = load_checkpoint(newest)
    return {key: state[key] for key in COMPARED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of cadence")
    parser.add_argument("--work-dir", type=Path, help="where the runs go (default: a temporary folder)")
    arguments = parser.parse_args()
    root = arguments.work_dir or Path(tempfile.mkdtemp(prefix="cadence-same-results-"))
    checkouts = {"baseline": arguments.baseline.resolve(), "this": REPOSITORY}
    report = {"benchmark": "same_results", "checkouts": {name: str(path) for name, path in checkouts.items()}, "recipes": []}
    for recipe, override in RECIPES.items():
        results = {name: train(path, recipe, override, root / f"{recipe}-{name}") for name, path in checkouts.items()}
        compared, differing = differences(final_state(root / f"{recipe}-baseline"), final_state(root / f"{recipe}-this"))
        report["recipes"].append({
            "recipe": recipe, "override": override, "tensors_compared": compared, "differences": differing,
            "history_identical": results["baseline"]["history"] == results["this"]["history"],
            "test_metrics_identical": results["baseline"]["test"] == results["this"]["test"],
        })
    report["identical"] = all(not entry["differences"] and entry["history_identical"] and entry["test_metrics_identical"]
                              for entry in report["recipes"])
    json.dump(report, sys.stdout, indent=2)
    print()
    sys.exit(0 if report["identical"] else 1)


if __name__ == "__main__":
    main()
