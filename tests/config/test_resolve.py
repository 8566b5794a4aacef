"""Resolving a recipe: every section validated once against its constructor's signature."""

from __future__ import annotations

import collections
from pathlib import Path

import pydantic
import pytest

from cadence.commands.train import train_recipe
from cadence.config.resolve import resolve
from cadence.config.schema import apply_overrides, validate_recipe
from cadence.errors import ConfigError

REPOSITORY = Path(__file__).resolve().parents[2]
BASE = {
    "name": "demo",
    "data": {"name": "manifests", "train": "train.jsonl", "target": "none"},
    "features": [{"name": "log_mel", "n_mels": 40}, {"name": "normalize"}],
    "model": {"name": "cnn_classifier"},
    "callbacks": [{"name": "early_stopping"}],
}


def resolved(overrides: list[str] = ()):
    return resolve(validate_recipe(apply_overrides(BASE, list(overrides))))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=0", r"trainer\.max_epochs: input should be greater than or equal to 1; got 0"),
        ("trainer.max_steps=0", r"trainer\.max_steps: input should be greater than or equal to 1"),
        ("trainer.clip_grad_norm=0", r"trainer\.clip_grad_norm: input should be greater than 0"),
        ("trainer.clip_grad_value=-1", r"trainer\.clip_grad_value: input should be greater than 0"),
        ("trainer.train_metrics_every=-1", r"trainer\.train_metrics_every: input should be greater than or equal to 0"),
        ("trainer.log_every=0", r"trainer\.log_every: input should be greater than or equal to 1"),
        ("trainer.mode=median", r"trainer\.mode: input should be 'min' or 'max'"),
        ("trainer.num_threads=0", r"trainer\.num_threads: input should be greater than or equal to 1"),
        ("trainer.task=x", r"trainer\.task: unknown key"),  # an object cadence passes, not a key
        ("checkpoint.every_epochs=0", r"checkpoint\.every_epochs: input should be greater than or equal to 1"),
        ("checkpoint.every_minutes=0", r"checkpoint\.every_minutes: input should be greater than 0"),
        ("checkpoint.keep_last=0", r"checkpoint\.keep_last: input should be greater than or equal to 1"),
        ("checkpoint.keep_best=-1", r"checkpoint\.keep_best: input should be greater than or equal to 0"),
        ("checkpoint.keep_lats=2", r"checkpoint\.keep_lats: unknown key \(did you mean 'keep_last'\?\)"),
    ],
)
def test_trainer_and_checkpoint_sections_refuse_what_their_constructors_forbid(override, message):
    with pytest.raises(ConfigError, match=message):
        resolved([override])


def test_the_trainer_section_holds_trainer_arguments_and_process_settings():
    recipe = resolved(["trainer.max_steps=null", "trainer.deterministic=true", "trainer.num_threads=2", "checkpoint.every_epochs=null"])
    assert recipe.process_settings() == {"deterministic": True, "num_threads": 2}
    assert "deterministic" not in recipe.trainer_arguments() and recipe.trainer_arguments()["max_epochs"] == 10
    assert recipe.checkpoint["every_epochs"] is None


def test_facts_fill_only_what_the_recipe_left_out():
    recipe = resolved(["model.num_classes=7"])
    facts = {"num_classes": 10, "sample_rate": 8000, "mode": "max"}
    assert recipe.arguments("model", facts)["num_classes"] == 7  # the recipe's own value wins
    assert recipe.arguments("features.0", facts)["sample_rate"] == 8000
    # The trainer's mode fills early stopping's, not normalization's (utterance or global).
    assert recipe.arguments("callbacks.0", facts)["mode"] == "max"
    assert recipe.arguments("features.1", facts)["mode"] == "utterance"


def test_a_required_parameter_no_fact_fills_names_its_key():
    recipe = resolved()  # the early check accepts it: the data may give num_classes
    with pytest.raises(ConfigError, match=r"model\.num_classes: required key is missing, and the data gives no num_classes"):
        recipe.arguments("model", {"sample_rate": 16000})


def test_each_component_is_validated_once_per_run(fsdd_root, tmp_path, monkeypatch):
    # Count validations against the schemas derived from signatures, by schema (the one of a
    # component whose facts are still open has the same name as its full one).
    counts = collections.Counter()
    validate = pydantic.BaseModel.model_validate.__func__

    def counting(cls, *arguments, **keywords):
        if cls.__module__ == "cadence.registry":  # made by schema_from_signature
            counts[cls.__name__] += 1
        return validate(cls, *arguments, **keywords)

    monkeypatch.setattr(pydantic.BaseModel, "model_validate", classmethod(counting))
    overrides = ["data.max_train_utterances=32", "data.max_eval_utterances=8", "data.preload=false", "model.channels=4",
                 "model.layers=1", "trainer.max_steps=1", "trainer.progress_bar=false", "experiment.tensorboard=false"]
    train_recipe(REPOSITORY / "recipes" / "fsdd" / "digits.yaml", overrides, exp_dir=tmp_path / "run")
    expected = {  # data, features, model, task, optimizer, scheduler, 3 metrics, callback, trainer, checkpoint
        "fsddConfig", "LogMelConfig", "CNNClassifierConfig", "ClassificationTaskConfig", "adamwConfig", "exponentialConfig",
        "AccuracyConfig", "F1ScoreConfig", "ConfusionMatrixConfig", "EarlyStoppingConfig", "TrainerConfig", "CheckpointPolicyConfig",
    }
    assert set(counts) == expected
    assert {name: count for name, count in counts.items() if count != 1} == {}
