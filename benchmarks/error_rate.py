"""WER and CER speed: cadence against jiwer and torchmetrics, timed in the same run.

A deterministic test set of utterance pairs (``--utterances``, 10,000 by default) is built
from a seeded random generator: references of 5 to 20 pseudo-words drawn from a Zipf-like
vocabulary, and hypotheses with about 6% substituted words (half of them a one-letter
misspelling, so CER sees realistic near misses), 3% deleted and 3% inserted. Each contender
turns the whole set into a corpus WER and CER:

- cadence: ``WordErrorRate`` / ``CharacterErrorRate``: ``update`` once with all pairs, then ``compute``;
- jiwer: ``process_words`` / ``process_characters`` (what ``jiwer.wer`` / ``jiwer.cer`` call);
- torchmetrics: ``torchmetrics.text.WordErrorRate`` / ``CharErrorRate``: ``update`` then ``compute``.

Rounds rotate the order of the contenders so machine noise hits them alike; the figure is
each contender's best time over the rounds (torchmetrics, far slower, runs in the first
``--slow-rounds`` rounds only). The values are checked to agree: cadence's rate and its
substitution, deletion and insertion counts must equal jiwer's exactly, and torchmetrics'
(float32) rate must match to 1e-6; the run exits with status 1 otherwise.

    python benchmarks/error_rate.py [--utterances 10000] [--rounds 7] [--slow-rounds 2] [--seed 0]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jiwer  # noqa: E402
import torchmetrics.text  # noqa: E402

from cadence.metrics import CharacterErrorRate, WordErrorRate  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def build_test_set(utterances: int, seed: int) -> tuple[list[str], list[str]]:
    """(references, hypotheses) as single-space-separated lower-case words."""
    generator = random.Random(seed)
    vocabulary = sorted({"".join(generator.choices(LETTERS, k=generator.randint(2, 9))) for _ in range(3000)})
    generator.shuffle(vocabulary)
    # Zipf-like word frequencies: a few words are very common, as in speech transcripts.
    weights = [1 / rank for rank in range(1, len(vocabulary) + 1)]

    def misspell(word: str) -> str:
        position = generator.randrange(len(word))
        return word[:position] + generator.choice(LETTERS) + word[position + 1 :]

    references, hypotheses = [], []
    for _ in range(utterances):
        reference = generator.choices(vocabulary, weights, k=generator.randint(5, 20))
        hypothesis = []
        for word in reference:
            draw = generator.random()
            if draw < 0.03:
                hypothesis.append(misspell(word))
            elif draw < 0.06:
                hypothesis.append(generator.choices(vocabulary, weights)[0])
            elif draw < 0.09:
                continue  # deletion
            else:
                hypothesis.append(word)
            if generator.random() < 0.03:
                hypothesis.append(generator.choices(vocabulary, weights)[0])  # insertion
        references.append(" ".join(reference))
        hypotheses.append(" ".join(hypothesis))
    return references, hypotheses


def cadence_rate(metric_class, references: list[str], hypotheses: list[str]) -> dict:
    metric = metric_class()
    metric.update(hypotheses, references)
    result = metric.compute()
    name = metric.name
    return {
        "rate": result[name],
        "operations": [result[f"{name}_substitutions"], result[f"{name}_deletions"], result[f"{name}_insertions"]],
    }


def jiwer_rate(process, references: list[str], hypotheses: list[str]) -> dict:
    output = process(references, hypotheses)
    rate = output.wer if hasattr(output, "wer") else output.cer
    return {"rate": rate, "operations": [output.substitutions, output.deletions, output.insertions]}


def torchmetrics_rate(metric_class, references: list[str], hypotheses: list[str]) -> dict:
    metric = metric_class()
    metric.update(hypotheses, references)
    return {"rate": float(metric.compute())}


CONTENDERS = {
    "wer": {
        "cadence": lambda references, hypotheses: cadence_rate(WordErrorRate, references, hypotheses),
        "jiwer": lambda references, hypotheses: jiwer_rate(jiwer.process_words, references, hypotheses),
        "torchmetrics": lambda references, hypotheses: torchmetrics_rate(
            torchmetrics.text.WordErrorRate, references, hypotheses
        ),
    },
    "cer": {
        "cadence": lambda references, hypotheses: cadence_rate(CharacterErrorRate, references, hypotheses),
        "jiwer": lambda references, hypotheses: jiwer_rate(jiwer.process_characters, references, hypotheses),
        "torchmetrics": lambda references, hypotheses: torchmetrics_rate(
            torchmetrics.text.CharErrorRate, references, hypotheses
        ),
    },
}


def measure(measure_name: str, references: list[str], hypotheses: list[str], rounds: int, slow_rounds: int) -> dict:
    contenders = CONTENDERS[measure_name]
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, dict] = {}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if name == "torchmetrics" and round_index >= slow_rounds:
                continue
            start = time.perf_counter()
            results[name] = contenders[name](references, hypotheses)
            seconds[name].append(time.perf_counter() - start)
    best = {name: min(times) for name, times in seconds.items()}
    agrees = (
        results["cadence"]["operations"] == results["jiwer"]["operations"]
        and results["cadence"]["rate"] == results["jiwer"]["rate"]
        and abs(results["cadence"]["rate"] - results["torchmetrics"]["rate"]) <= 1e-6
    )
    return {
        "values": {name: result["rate"] for name, result in results.items()},
        "substitutions_deletions_insertions": {
            name: result["operations"] for name, result in results.items() if "operations" in result
        },
        "agrees": agrees,
        "best_seconds": {name: round(value, 5) for name, value in best.items()},
        "timed_rounds": {name: len(times) for name, times in seconds.items()},
        "microseconds_per_utterance": {name: round(value / len(references) * 1e6, 2) for name, value in best.items()},
        "jiwer_over_cadence": round(best["jiwer"] / best["cadence"], 2),
        "torchmetrics_over_cadence": round(best["torchmetrics"] / best["cadence"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--slow-rounds", type=int, default=2, help="rounds that also time torchmetrics")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    slow_rounds = max(1, min(arguments.slow_rounds, arguments.rounds))
    references, hypotheses = build_test_set(arguments.utterances, arguments.seed)
    report = {
        "test_set": {
            "utterances": len(references),
            "reference_words": sum(len(text.split()) for text in references),
            "reference_characters": sum(len(text) for text in references),
            "seed": arguments.seed,
        },
        "versions": {
            "python": platform.python_version(),
            **{package: version(package) for package in ("rapidfuzz", "jiwer", "torchmetrics", "torch")},
        },
        "wer": measure("wer", references, hypotheses, arguments.rounds, slow_rounds),
        "cer": measure("cer", references, hypotheses, arguments.rounds, slow_rounds),
    }
    print(json.dumps(report, indent=2))
    if not (report["wer"]["agrees"] and report["cer"]["agrees"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
