"""Connected-digit speech recognition end to end: test WER/CER and the wall time of each whole
`cadence train` run of the three recipes (DeepSpeech2, Listen-Attend-Spell, TDS).

Each recipe runs as a fresh `cadence train` process (start-up, data, training, test all
counted), exactly as a user runs it. Targets (issue 5), on the 2-core reference machine:
test WER <= 1% for DeepSpeech2 and <= 2% for LAS and TDS, each run in at most 15 minutes.
The test set is FSDD connected digits' 500 utterances built from FSDD's official test takes 0-4.

    python benchmarks/asr.py [key=value ...] [--recipes asr_ds2 asr_las asr_tds] [--keep DIR]

(overrides come first: --recipes takes every word after it). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
TARGET_WER = {"asr_ds2": 0.01, "asr_las": 0.02, "asr_tds": 0.02}
TARGET_WALL_S = 15 * 60


def run_recipe(recipe: str, overrides: list[str], root: Path) -> dict:
    exp_dir = root / recipe
    command = [sys.executable, "-m", "cadence", "train", str(REPOSITORY / "recipes" / "fsdd" / f"{recipe}.yaml"),
               "trainer.progress_bar=false", *overrides, "--exp-dir", str(exp_dir)]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        return {"recipe": recipe, "error": completed.stderr.strip().splitlines()[-3:]}
    results = json.loads((exp_dir / "results.json").read_text())
    test = results["test"]
    return {
        "recipe": recipe,
        "test_wer": round(test["test/wer"], 5),
        "test_word_errors": {kind: test[f"test/wer_{kind}"] for kind in ("substitutions", "deletions", "insertions")},
        "test_reference_words": test["test/wer_reference_words"],
        "test_cer": round(test["test/cer"], 5),
        "test_sentence_error_rate": round(test["test/wer_sentence_error_rate"], 5),
        "best_epoch": results["best_epoch"],
        "best_val_wer": results["best_value"],
        "epochs_completed": results["epochs_completed"],
        "fit_wall_s": results["wall_time_s"],
        "process_wall_s": round(wall, 1),
        "meets_targets": test["test/wer"] <= TARGET_WER.get(recipe, 1.0) and wall <= TARGET_WALL_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(TARGET_WER))
    parser.add_argument("--keep", help="keep the experiment folders here (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cadence-bench-") as temporary:
        root = Path(arguments.keep or temporary)
        runs = [run_recipe(recipe, arguments.overrides, root) for recipe in arguments.recipes]
    report = {
        "benchmark": "asr",
        "cpu_count": os.cpu_count(),
        "torch_threads": __import__("torch").get_num_threads(),
        "runs": runs,
        "all_meet_targets": all(run.get("meets_targets", False) for run in runs),
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
