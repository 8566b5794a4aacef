"""A run built in Python: written down as a recipe when its components are registered, and
one warning naming what is not (cadence.run_record)."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import types
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import cadence.checkpoint.rng
import cadence.optim
from cadence import ClassificationTask, EarlyStopping, Experiment, Trainer
from cadence.config.resolve import resolve
from cadence.config.schema import validate_recipe
from cadence.metrics import Accuracy
from cadence.registry import DATASETS, MODELS, DataBundle
from cadence.run_record import describe_run
from tests.conftest import separable_data


@MODELS.register("test_run_record_linear")
class RegisteredLinear(nn.Module):
    def __init__(self, num_classes: int, inputs: int = 6):
        super().__init__()
        self.linear = nn.Linear(inputs, num_classes)

    def forward(self, inputs):
        return self.linear(inputs)


@DATASETS.register("test_run_record_blobs")
def blobs(work_dir=None, seed: int = 0, experiment_dir=None, batch_size: int = 16) -> DataBundle:
    return DataBundle(
        train=DataLoader(separable_data(seed=seed), batch_size=batch_size, shuffle=True),
        valid=DataLoader(separable_data(samples=48, seed=seed), batch_size=24), facts={"num_classes": 3},
    )


@pytest.fixture(autouse=True)
def no_earlier_seed(monkeypatch):
    """seed_everything's last seed is per process: another test's must not leak in."""
    monkeypatch.setattr(cadence.checkpoint.rng, "_last_seed", None)


@pytest.fixture
def warnings_logged():
    """The cadence logger's warnings (it may not propagate to pytest's handler)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("cadence")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def python_built_trainer(experiment: Experiment, model: nn.Module) -> Trainer:
    task = ClassificationTask(model)
    return Trainer(
        task, cadence.optim.sgd(task, lr=0.1), max_epochs=2, metrics=[Accuracy(num_classes=3)], monitor="val/accuracy",
        mode="max", callbacks=[EarlyStopping(patience=2)], experiment=experiment, progress_bar=False,
    )


def test_a_run_of_registered_components_is_written_as_a_resolved_recipe(tmp_path):
    data = blobs(seed=4)
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        trainer = python_built_trainer(experiment, RegisteredLinear(num_classes=3))
        description = describe_run(trainer, data.train, data.valid, data.test)
    assert description.unrebuildable == [] and description.bundle is data
    config = description.config
    assert config["seed"] == 4 and config["data"] == {"name": "test_run_record_blobs", "batch_size": 16}
    assert config["model"] == {"name": "test_run_record_linear", "num_classes": 3, "inputs": 6}
    assert config["optimizer"]["name"] == "sgd" and config["optimizer"]["lr"] == 0.1
    assert config["trainer"]["monitor"] == "val/accuracy" and config["trainer"]["device"] == "auto"  # as asked, not as resolved
    assert config["imports"] == [__name__]
    # It is already resolved: resolving it again changes nothing, so a rebuilt run records the same config.
    assert resolve(validate_recipe(config)).to_dict() == config


def test_an_unregistered_model_is_named_in_one_warning_and_the_run_still_checkpoints(tmp_path, warnings_logged):
    data = blobs()
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        trainer = python_built_trainer(experiment, nn.Linear(6, 3))  # a plain module: not registered
        trainer.fit(data.train, data.valid)
    (warning,) = [record.getMessage() for record in warnings_logged]
    assert "cannot be rebuilt" in warning and "model (Linear) is not a registered model" in warning
    assert '@MODELS.register("name")' in warning and "optimizer" not in warning and "data" not in warning
    assert trainer.config is None and not (tmp_path / "run" / "config.yaml").exists()
    assert list((tmp_path / "run" / "checkpoints").iterdir())  # its weights are still checkpointed
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert provenance["config_sha256"] is None and (tmp_path / "run" / "results.json").is_file()


def test_plain_torch_objects_are_each_named_with_how_to_make_them_rebuildable(tmp_path, warnings_logged):
    task = ClassificationTask(nn.Linear(6, 3))
    loader = DataLoader(separable_data(), batch_size=16)
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        trainer = Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), max_epochs=1, experiment=experiment, progress_bar=False)
        trainer.fit(loader)
    (warning,) = [record.getMessage() for record in warnings_logged]
    assert "optimizer (SGD) was not made by a registered optimizer factory" in warning and "cadence.optim.adamw(task" in warning
    assert "train data (DataLoader) does not come from a registered data builder" in warning
    assert '@DATASETS.register("name")' in warning


def registered_in(module: types.ModuleType, name: str) -> type:
    """A model class defined in ``module`` and registered under ``name``."""
    def __init__(self, num_classes: int):
        nn.Module.__init__(self)
        self.linear = nn.Linear(6, num_classes)

    model = type("Defined", (nn.Module,), {"__module__": module.__name__, "__init__": __init__, "forward": RegisteredLinear.forward})
    return MODELS.register(name, model)


def test_a_component_no_file_holds_is_named_and_the_run_is_not_rebuildable(monkeypatch):
    notebook = types.ModuleType("notebook_cell")  # what a notebook or python -c gives: no __file__
    monkeypatch.setitem(sys.modules, "notebook_cell", notebook)
    model = registered_in(notebook, "test_run_record_notebook_model")(num_classes=3)
    data = blobs()
    with Experiment(Path(tempfile.mkdtemp()) / "run", tensorboard=False) as experiment:
        description = describe_run(python_built_trainer(experiment, model), data.train, data.valid)
    assert description.config is None
    assert any("where no file holds it" in problem for problem in description.unrebuildable)


@pytest.mark.parametrize("guarded", [True, False])
def test_a_script_without_a_main_block_is_not_rebuildable(tmp_path, monkeypatch, guarded):
    script = tmp_path / "train_it.py"
    body = "train()\n"
    script.write_text('if __name__ == "__main__":\n    ' + body if guarded else body)
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.delitem(sys.modules, "train_it", raising=False)
    model = registered_in(main, f"test_run_record_script_model_{guarded}")(num_classes=3)
    data = blobs()
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        description = describe_run(python_built_trainer(experiment, model), data.train, data.valid)
    sys.modules.pop("train_it", None)
    if guarded:
        assert description.unrebuildable == [] and "train_it" in description.config["imports"]
    else:
        assert description.config is None
        assert any("has no `if __name__" in problem for problem in description.unrebuildable)


def test_two_different_seeds_cannot_be_one_recipe_seed(tmp_path):
    cadence.checkpoint.rng.seed_everything(1)
    data = blobs(seed=4)
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        description = describe_run(python_built_trainer(experiment, RegisteredLinear(num_classes=3)), data.train, data.valid)
    assert description.config is None
    assert any("seed=4 and seed_everything(1)" in problem for problem in description.unrebuildable)
