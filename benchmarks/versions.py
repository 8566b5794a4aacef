"""Two checkouts of cadence side by side: the cost of ``import cadence.trainer`` and the loop's
own cost per step.

A refactoring must not make the loop slower or its import heavier; since this machine's speed
drifts, the two checkouts are measured in alternation, round after round, each in a fresh
process with ``PYTHONPATH`` pointing at its checkout, and compared within each round.

- import: wall time of a process that imports ``cadence.trainer`` (interpreter start-up and
  torch included), the time of ``import cadence.trainer`` once torch is imported (cadence's
  own share), the number of modules left in ``sys.modules``, and whether the audio stack
  (soundfile, soxr) or the config layer was loaded.
- loop: ``benchmarks/overhead.py``'s tiny-model figure, run from each checkout's own copy:
  microseconds per step on a tiny linear model (3,000 steps, SGD, gradient clipping), the raw
  PyTorch loop and cadence's Trainer in the same process, so the difference is the Trainer's
  bookkeeping.

    python benchmarks/versions.py --baseline /path/to/older/checkout [--rounds 7]

Prints one JSON object. Without ``--baseline`` only this checkout is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]

IMPORT_PROBE = """
import sys, json, time
import torch
started = time.perf_counter()
import cadence.trainer
own_seconds = time.perf_counter() - started
loaded = set(sys.modules)
print(json.dumps({
    "own_import_s": own_seconds,
    "modules": len(loaded),
    "audio_stack": sorted(name for name in ("soundfile", "soxr") if name in loaded),
    "config_layer": any(name == "cadence.config" or name.startswith("cadence.config.") for name in loaded),
    "pydantic": "pydantic" in loaded,
}))
"""


def loop_cost(checkout: Path) -> dict[str, float]:
    """Run in the child: the checkout's own ``benchmarks/overhead.py`` tiny-model measurement
    (the raw loop and the Trainer on the same 3,000 batches, medians of 5)."""
    sys.path.insert(0, str(checkout / "benchmarks"))
    import overhead

    raw, framework = overhead.per_step_overhead()
    return {"raw_us": raw, "cadence_us": framework}


def run_child(checkout: Path, arguments: list[str]) -> tuple[float, str]:
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, *arguments], env=environment, capture_output=True, text=True, check=True, cwd="/")
    return time.perf_counter() - started, completed.stdout


def measure(checkout: Path) -> dict:
    import_seconds, probe = run_child(checkout, ["-c", IMPORT_PROBE])
    _, loop = run_child(checkout, [str(Path(__file__).resolve()), "--child-loop", str(checkout)])
    return {"import_s": import_seconds, **json.loads(probe), **json.loads(loop)}


def summary(rounds: list[dict]) -> dict:
    first = rounds[0]
    raw = statistics.median(entry["raw_us"] for entry in rounds)
    framework = statistics.median(entry["cadence_us"] for entry in rounds)
    return {
        "import_cadence_trainer_s": round(statistics.median(entry["import_s"] for entry in rounds), 3),
        "import_after_torch_s": round(statistics.median(entry["own_import_s"] for entry in rounds), 3),
        "modules_loaded": first["modules"],
        "audio_stack_loaded": first["audio_stack"],
        "config_layer_loaded": first["config_layer"],
        "pydantic_loaded": first["pydantic"],
        "tiny_model_us_per_step": {"raw": round(raw, 1), "cadence": round(framework, 1), "overhead_us": round(framework - raw, 1)},
        # Trainer over raw loop in the same process: the machine's drift between processes cancels.
        "tiny_model_cadence_over_raw": round(statistics.median(entry["cadence_us"] / entry["raw_us"] for entry in rounds), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="another checkout of cadence to compare with")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child-loop", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child_loop:
        print(json.dumps(loop_cost(arguments.child_loop)))
        return
    checkouts = {"this": REPOSITORY}
    if arguments.baseline is not None:
        checkouts["baseline"] = arguments.baseline.resolve()
    measured: dict[str, list[dict]] = {name: [] for name in checkouts}
    for round_index in range(arguments.rounds):
        names = list(checkouts)[::-1] if round_index % 2 else list(checkouts)  # alternate who goes first
        for name in names:
            measured[name].append(measure(checkouts[name]))
    report = {"benchmark": "versions", "rounds": arguments.rounds, "checkouts": {name: str(path) for name, path in checkouts.items()}}
    report.update({name: summary(rounds) for name, rounds in measured.items()})
    if "baseline" in measured:
        # Within-round ratios cancel the machine's drift between rounds.
        report["this_over_baseline"] = {
            "import_time": round(statistics.median(a["import_s"] / b["import_s"] for a, b in zip(measured["this"], measured["baseline"])), 3),
            "import_after_torch": round(statistics.median(
                a["own_import_s"] / b["own_import_s"] for a, b in zip(measured["this"], measured["baseline"])), 3),
            "cadence_us_per_step": round(statistics.median(
                a["cadence_us"] / b["cadence_us"] for a, b in zip(measured["this"], measured["baseline"])), 3),
            "cadence_over_raw": {"this": report["this"]["tiny_model_cadence_over_raw"],
                                 "baseline": report["baseline"]["tiny_model_cadence_over_raw"]},
            "overhead_us_per_step": {
                "this": report["this"]["tiny_model_us_per_step"]["overhead_us"],
                "baseline": report["baseline"]["tiny_model_us_per_step"]["overhead_us"],
            },
        }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
