"""Seeded fuzzing of every shipped recipe: no single corruption ends in a traceback.

Each recipe of ``recipes/`` is resolved (every default made explicit, at the test sizes the
integration tests use), then corrupted 120 times (fewer for the slowest to build and for those
that add a section to another; three times as many with ``CADENCE_SLOW_TESTS=1``), one change
each: a key misspelt, a value of another type, a value out of range, a key deleted, a name nobody
registered. Each corrupted recipe goes through ``cadence train --print-config``, and must either

- be refused with one line and exit 2, by ``cadence train --exp-dir`` too, leaving no
  experiment folder; or
- be accepted and provably fine: every component builds and a training step and a validation
  batch run; or a component refuses its values (when built, or at the first step) in one line,
  as ``cadence train --exp-dir`` then does too, leaving no folder.

Nothing else may happen: any other exception fails the test, naming the corruption.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml

from cadence.commands.cli import main
from cadence.config.build import build, build_data
from cadence.config.resolve import ResolvedRecipe, resolve
from cadence.config.schema import apply_overrides, load_yaml, validate_recipe
from cadence.errors import CadenceError
from cadence.runtime.device import move_to_device

REPOSITORY = Path(__file__).resolve().parents[2]
# CADENCE_SLOW_TESTS=1: three times as many corruptions of every recipe (about 3 minutes).
SCALE = 3 if os.environ.get("CADENCE_SLOW_TESTS") == "1" else 1
CORRUPTIONS_PER_RECIPE = 120 * SCALE
# The stage recipes are asr_ds2.yaml and asr_las.yaml plus a stages section: fewer corruptions,
# a share of which land in the stages.
FEWER_CORRUPTIONS = {name: count * SCALE for name, count in {
    "asr_ds2_stages.yaml": 40, "asr_las_ctc_first.yaml": 40, "asr_ds2_realign.yaml": 40,
    # PASE+: the pretraining recipe is the slowest to build; the two downstream recipes differ by a task.
    "pase.yaml": 40, "pase_speakers.yaml": 40, "pase_digits.yaml": 20}.items()}
CLASSIFICATION = ["data.max_train_utterances=64", "data.max_eval_utterances=16"]
ASR = ["data.corpus_sizes=[60,12,12]", "data.batching.max_frames=6000"]
PASE_ENCODER_SETTINGS = ["sinc_filters=4", "sinc_kernel=31", "channels=[4,4,4,4,4,4,4]", "rnn_hidden=4", "output_size=8"]
PASE_ENCODER = [f"model.{setting}" for setting in PASE_ENCODER_SETTINGS]
TEST_SIZES = {  # what the integration tests train with: the same recipes, smaller
    "digits.yaml": CLASSIFICATION,
    "speakers.yaml": CLASSIFICATION,
    "asr_ds2.yaml": [*ASR, "model.rnn_hidden=24", "model.rnn_layers=1", "model.conv_channels=4"],
    "asr_las.yaml": [*ASR, "model.listener_hidden=16", "model.speller_hidden=32", "model.attention_size=16", "model.embedding_size=16"],
    "asr_tds.yaml": [*ASR, "model.channels=2", "model.channel_growth=1", "model.blocks_per_group=1", "model.key_value_size=32"],
    "asr_ds2_stages.yaml": [*ASR, "model.rnn_hidden=24", "model.conv_channels=4"],
    "asr_ds2_realign.yaml": [*ASR, "model.rnn_hidden=24", "model.rnn_layers=1", "model.conv_channels=4"],
    "asr_las_ctc_first.yaml": [*ASR, "model.listener_hidden=16", "model.speller_hidden=32", "model.attention_size=16",
                               "model.embedding_size=16"],
    "pase.yaml": ["data.corpus_sizes=[60,12,12]", "data.batching.max_seqs=16", *PASE_ENCODER,
                  "task.workers.regressors.waveform.model.channels=4", "features.0.simulated_rooms=3"],
    "pase_speakers.yaml": [*CLASSIFICATION, "preload=[]", "data.labelled_per_class=2", "model.hidden=16",
                           *[f"model.encoder.{setting}" for setting in PASE_ENCODER_SETTINGS]],
    "pase_digits.yaml": [*CLASSIFICATION, "preload=[]", "data.labelled_per_class=2", "model.hidden=16",
                         *[f"model.encoder.{setting}" for setting in PASE_ENCODER_SETTINGS]],
}
OTHER_TYPES = ["text", 3.5, 7, True, False, None, [1, 2], {"key": 1}, "", "1e3"]
# Outside what a parameter may hold: below its range, above a fraction's, beyond int64, not finite.
# (A legal but huge value, 10**9 utterances, is a run that takes long, not a bad recipe.)
OUT_OF_RANGE = [-1, 0, -0.5, 1.5, 2**70, math.nan, math.inf, -math.inf]


def test_every_shipped_recipe_is_fuzzed():
    assert sorted(path.name for path in (REPOSITORY / "recipes" / "fsdd").glob("*.yaml")) == sorted(TEST_SIZES)


def places(node: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every (path, value) of a nested recipe, sections and leaves alike."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found = []
    for key, value in children:
        found += [((*path, key), value), *places(value, (*path, key))]
    return found


def corrupt(recipe: dict, rng: random.Random) -> tuple[dict, str]:
    """One random change to a copy of ``recipe``, and what it was."""
    path, value = rng.choice(places(recipe))
    corrupted = copy.deepcopy(recipe)
    parent = corrupted
    for key in path[:-1]:
        parent = parent[key]
    last, where = path[-1], ".".join(map(str, path))
    kind = rng.choice(["typo", "delete", "type", "range", "name"])
    if kind == "typo" and isinstance(last, str):
        at = rng.randrange(len(last) + 1)
        typo = rng.choice([last[:at] + rng.choice("aex_") + last[at:], last[:at] + last[at + 1:], last.upper(), last + "s"])
        if typo == last or typo in parent:
            typo = last + "_"
        parent[typo] = parent.pop(last)
        return corrupted, f"{where} misspelt as {typo!r}"
    if kind in ("typo", "delete"):
        del parent[last]
        return corrupted, f"{where} deleted"
    if kind == "type":
        parent[last] = rng.choice(OTHER_TYPES)
    elif kind == "range":
        parent[last] = rng.choice(OUT_OF_RANGE)
    else:
        parent[last] = f"{value}_unknown" if isinstance(value, str) else "no_such_name"
    return corrupted, f"{where}={parent[last]!r} (was {value!r})"


def one_line_refusal(capsys, code: int, what: str) -> str:
    error = capsys.readouterr().err
    lines = [line for line in error.strip().splitlines() if " INFO " not in line]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cadence: error: "), f"{what}: exit {code}\n{error}"
    return lines[0]


@contextlib.contextmanager
def process_settings_kept() -> Iterator[None]:
    """``cadence train`` applies a recipe's process settings (threads, deterministic kernels) to
    this process: put them back for the tests that follow."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


class Proof:
    """Builds an accepted recipe and runs a training step and a validation batch; data (the
    costly part) is built once for each distinct data section."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.data: dict[str, tuple[Any, Any, Any]] = {}

    def batches(self, recipe: ResolvedRecipe) -> tuple[Any, Any, Any]:
        key = json.dumps([recipe.to_dict()["data"], recipe.config.seed], sort_keys=True, default=str)
        if key not in self.data:
            bundle = build_data(recipe, self.work_dir / f"data-{len(self.data)}")
            self.data[key] = (bundle, next(iter(bundle.train)), next(iter(bundle.valid)))
        return self.data[key]

    def run(self, recipe: ResolvedRecipe) -> None:
        bundle, train_batch, valid_batch = self.batches(recipe)
        trainer = build(recipe, work_dir=self.work_dir / "built", data=bundle).trainer
        device = trainer.device
        output = trainer.training_step(move_to_device(train_batch, device))
        output.loss.backward()
        trainer.clip_gradients()
        trainer.optimizer_step()
        evaluation = trainer.evaluate_batch(move_to_device(valid_batch, device))
        for metric in trainer.metrics:
            metric.update(evaluation.predictions, evaluation.targets)
            metric.compute()


@pytest.mark.parametrize("recipe_name", sorted(TEST_SIZES))
def test_no_single_corruption_of_a_recipe_ends_in_a_traceback(recipe_name, tmp_path, capsys, fsdd_root):
    base = resolve(validate_recipe(apply_overrides(load_yaml(REPOSITORY / "recipes" / "fsdd" / recipe_name), TEST_SIZES[recipe_name])))
    resolved_base = base.to_dict()
    proof = Proof(tmp_path)
    rng = random.Random(f"{recipe_name}-0")
    outcomes = {"refused": 0, "same as the recipe": 0, "refused when built": 0, "built and stepped": 0}
    proven: set[str] = set()
    corruptions = FEWER_CORRUPTIONS.get(recipe_name, CORRUPTIONS_PER_RECIPE)
    for index in range(corruptions):
        corrupted, what = corrupt(resolved_base, rng)
        path = tmp_path / f"corrupted-{index}.yaml"
        path.write_text(yaml.dump(corrupted, Dumper=yaml.CSafeDumper), encoding="utf-8")
        capsys.readouterr()
        code = main(["train", str(path), "--print-config"])
        if code != 0:
            one_line_refusal(capsys, code, what)
            run = tmp_path / f"run-{index}"
            one_line_refusal(capsys, main(["train", str(path), "--exp-dir", str(run)]), what)
            assert not run.exists(), f"{what}: the refused recipe left {run}"
            outcomes["refused"] += 1
            continue
        recipe = resolve(validate_recipe(corrupted))
        resolved = json.dumps(recipe.to_dict(), sort_keys=True, default=str)
        if recipe.to_dict() == resolved_base or resolved in proven:
            outcomes["same as the recipe"] += 1  # proven by the recipe's own runs (or an earlier proof)
            continue
        try:
            proof.run(recipe)
        except CadenceError as error:
            assert len(str(error).splitlines()) == 1, f"{what}: {error}"
            # The real command refuses it too, in one line, and keeps no folder.
            run = tmp_path / f"run-{index}"
            with process_settings_kept():
                code = main(["train", str(path), "--exp-dir", str(run)])
            one_line_refusal(capsys, code, what)
            assert not run.exists(), f"{what}: the refused recipe left {run}"
            outcomes["refused when built"] += 1
        except Exception as error:  # a traceback a user would see
            raise AssertionError(f"{recipe_name}, {what}: {type(error).__name__}: {error}") from error
        else:
            outcomes["built and stepped"] += 1
        proven.add(resolved)
    print(recipe_name, outcomes)
    assert sum(outcomes.values()) == corruptions and outcomes["refused"] > corruptions // 2
