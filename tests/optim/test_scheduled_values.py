"""Schedules of any value: the two forms, and every kind of setting they reach."""

from __future__ import annotations

import types

import pydantic
import pytest
import torch
from torch import nn

from cadence.data.pipeline import FeaturePipeline
from cadence.data.spec_augment import SpecAugment
from cadence.errors import ConfigError
from cadence.losses import LossTerm
from cadence.optim.scheduled_values import ScheduledSettings, ScheduledValue


def test_epochs_hold_each_value_and_steps_interpolate_or_hold():
    by_epoch = ScheduledValue(epochs={1: 10.0, 3: 5.0, 5: None})
    assert [by_epoch.at(step=0, epoch=epoch) for epoch in range(6)] == [10.0, 10.0, 5.0, 5.0, None, None]
    linear = ScheduledValue(steps=[(10, 0.0), (20, 1.0), (40, 0.5)])
    assert [linear.at(step, 0) for step in (0, 10, 15, 20, 30, 40, 99)] == [0.0, 0.0, 0.5, 1.0, 0.75, 0.5, 0.5]
    constant = ScheduledValue(steps=[(0, 2.0), (100, None)], interpolate="constant")
    assert [constant.at(step, 0) for step in (0, 99, 100)] == [2.0, 2.0, None]


@pytest.mark.parametrize("value, message", [
    ({"epochs": {2: 1.0}}, "value of epoch 1"),
    ({"steps": [[10, 1.0], [5, 2.0]]}, "increasing steps"),
    ({"steps": [[0, 1.0], [5, None]]}, "null cannot be interpolated"),
    ({"epochs": {1: 1.0}, "steps": [[0, 1.0]]}, "either epochs"),
    ({"epochs": {1: 1.0}, "interpolate": "linear"}, "interpolate applies to steps"),
    ({"epochs": {1: float("nan")}}, "finite"),
])
def test_malformed_schedules_are_refused(value, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        ScheduledValue.model_validate(value)


class Task(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.GRU(4, 4, num_layers=2, dropout=0.1))
        self.features = FeaturePipeline([nn.Identity(), SpecAugment(time_masks=2)])
        self.losses = {"ctc": LossTerm(weight=1.0)}
        self.scheduled_sampling = 0.0


def trainer_with(task: nn.Module, callbacks=()) -> types.SimpleNamespace:
    return types.SimpleNamespace(task=task, callbacks=list(callbacks), train_loader=[], clip_grad_norm=None)


def test_each_kind_of_setting_is_set_where_it_is_read():
    task, noise = Task(), types.SimpleNamespace(std=0.0)
    trainer = trainer_with(task, [noise])
    settings = ScheduledSettings({
        "dropout": {"epochs": {1: 0.3}},
        "trainer.clip_grad_norm": {"epochs": {1: 2.0}},
        "features.1.time_masks": {"steps": [[0, 0], [10, 4]]},
        "task.losses.ctc.weight": {"epochs": {1: 0.25}},
        "task.scheduled_sampling": {"epochs": {1: 0.5}},
        "callbacks.0.std": {"epochs": {1: 0.01}},
    })
    settings.bind(trainer)
    settings.apply(step=4, epoch=0, epoch_start=True)
    assert task.model[1].p == 0.3 and task.model[2].dropout == 0.3
    assert trainer.clip_grad_norm == 2.0
    assert task.features.stages[1].time_masks == 2  # 1.6 rounded: an integer setting stays an integer
    assert task.losses["ctc"].weight == 0.25 and task.scheduled_sampling == 0.5 and noise.std == 0.01
    settings.apply(step=10, epoch=0, epoch_start=False)  # per-step values only
    assert task.features.stages[1].time_masks == 4
    assert settings.logs()["train/schedule/features.1.time_masks"] == 4.0


@pytest.mark.parametrize("key, message", [
    ("model.0.weight", "only a number setting can be scheduled; this one is a Parameter"),
    ("task.losses.attention.weight", "no key 'attention' at losses.attention; keys: ctc"),
    ("features.5.time_masks", "index 5 is out of range"),
    ("trainer.max_epochs", "the trainer's scheduled settings are clip_grad_norm, clip_grad_value"),
    ("data.max_duration", "has no batching to schedule"),
    ("weight_noise", "a scheduled setting is dropout or starts with"),
])
def test_a_setting_that_cannot_be_scheduled_is_refused_naming_its_key(key, message):
    settings = ScheduledSettings({key: {"epochs": {1: 1.0}}})
    with pytest.raises(ConfigError, match=rf"schedules\.{key.replace('.', '[.]')}: .*{message}"):
        settings.bind(trainer_with(Task()))


def test_a_dropout_out_of_range_is_refused_when_it_applies():
    settings = ScheduledSettings({"dropout": {"epochs": {1: 0.1, 2: 1.5}}})
    settings.bind(trainer_with(Task()))
    settings.apply(0, 0, epoch_start=True)
    with pytest.raises(ConfigError, match=r"schedules\.dropout: .*\[0, 1\], got 1.5"):
        settings.apply(10, 1, epoch_start=True)
