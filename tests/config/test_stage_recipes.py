"""A stage's recipe: the recipe with the stage's overrides, the same whether it is derived from
the recipe as written (a new run) or from a resumed run's saved config (every default spelled out)."""

from __future__ import annotations

from cadence.config.schema import StageConfig
from cadence.config.stages import stage_recipe

WRITTEN = {"task": {"name": "ctc", "decoding": {"method": "greedy"}}, "model": {"name": "deepspeech2", "rnn_layers": 3}}
SAVED = {"task": {"name": "ctc", "losses": {"ctc": {"weight": 1.0}}, "normalize": "target_length",
                  "decoding": {"method": "greedy", "beam_size": 8}},
         "model": {"name": "deepspeech2", "rnn_layers": 3, "rnn_hidden": 192}}


def test_another_component_starts_its_section_afresh_from_either_config():
    stage = StageConfig(overrides={"task.name": "framewise", "task.alignments": "a.jsonl"})
    for recipe in (WRITTEN, SAVED):
        assert stage_recipe(recipe, stage, 1)["task"] == {"name": "framewise", "alignments": "a.jsonl"}


def test_the_same_component_keeps_the_section_and_takes_the_overrides():
    stage = StageConfig(overrides={"task.name": "ctc", "model.rnn_layers": 1})
    derived = stage_recipe(SAVED, stage, 0)
    assert derived["task"] == SAVED["task"] and derived["model"] == {**SAVED["model"], "rnn_layers": 1}
