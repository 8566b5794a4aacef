"""Registered components remember what they were built with (cadence.construction)."""

from __future__ import annotations

import gc
import weakref

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import cadence.optim
from cadence.construction import bundle_of, construction_of
from cadence.models.cnn_classifier import CNNClassifier
from cadence.registry import DATASETS, OPTIMIZERS, DataBundle, Registry


class Doubling(nn.Module):
    def __init__(self, width: int, scale: float = 2.0):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.scale = scale


class Tripling(Doubling):
    """A subclass: other behaviour, perhaps other arguments; never mistaken for its parent."""


def test_a_registered_class_records_its_arguments_defaults_included():
    registry = Registry("model", "MODELS")
    registry.register("doubling", Doubling)
    model = Doubling(4)
    construction = construction_of(model)
    assert construction.factory is Doubling and construction.arguments == {"width": 4, "scale": 2.0}
    assert "_cadence_construction" not in model.state_dict()  # the weights are untouched


def test_only_the_registered_class_itself_records_not_a_subclass():
    registry = Registry("model", "MODELS")
    registry.register("doubling", Doubling)
    assert construction_of(Tripling(4)) is None


def test_a_registered_factory_records_on_the_object_it_returns():
    task = nn.Linear(3, 2)
    optimizer = cadence.optim.sgd(task, lr=0.5)
    construction = construction_of(optimizer)
    assert OPTIMIZERS.name_of(construction.factory) == "sgd"
    assert construction.arguments["model"] is task and construction.arguments["lr"] == 0.5
    assert construction.arguments["momentum"] == 0.9  # the default, recorded too
    assert construction_of(torch.optim.SGD(task.parameters(), lr=0.5)) is None  # plain torch: nothing


def test_a_data_bundle_marks_its_loaders_and_a_registered_builder_records_it():
    @DATASETS.register("test_construction_pairs")
    def pairs(work_dir=None, seed: int = 0, experiment_dir=None, size: int = 8) -> DataBundle:
        data = TensorDataset(torch.zeros(size, 2), torch.zeros(size, dtype=torch.long))
        return DataBundle(train=DataLoader(data), valid=DataLoader(data))

    bundle = pairs(seed=3)
    assert bundle_of(bundle.train) == (bundle, "train") and bundle_of(bundle.valid) == (bundle, "valid")
    assert construction_of(bundle).arguments == {"work_dir": None, "seed": 3, "experiment_dir": None, "size": 8}
    assert bundle_of(DataLoader(TensorDataset(torch.zeros(2)))) is None


def test_a_record_adds_nothing_to_the_state_of_its_object():
    # An LR schedule's state_dict is its whole __dict__: a record stored there would be saved.
    optimizer = cadence.optim.sgd(nn.Linear(2, 2))
    schedule = cadence.optim.exponential(optimizer, gamma=0.5)
    assert construction_of(schedule) is not None
    assert set(schedule.state_dict()) == set(torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5).state_dict())


def test_records_do_not_keep_their_objects_alive():
    model = CNNClassifier(num_classes=3, n_mels=8, channels=4, layers=1)
    assert construction_of(model) is not None
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
