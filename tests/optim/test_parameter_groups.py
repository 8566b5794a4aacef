"""Per-group learning rates and weight decay chosen by parameter-name patterns (``groups``)."""

from __future__ import annotations

import json

import pydantic
import pytest
import torch
from torch import nn

import cadence.optim
from cadence.checkpoint.format import load_checkpoint, save_checkpoint
from cadence.config.resolve import resolve
from cadence.config.schema import validate_recipe
from cadence.construction import construction_of
from cadence.errors import ConfigError
from cadence.registry import OPTIMIZERS

FACTORIES = ["sgd", "adam", "adamw"]


class Network(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8))
        self.workers = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.workers(self.encoder(inputs)))


class Task(nn.Module):
    """What the factories receive: a module whose model is at ``.model`` (names start with ``model.``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = Network()


def settings_by_parameter(optimizer: torch.optim.Optimizer) -> dict[int, tuple[str, float, float]]:
    """id(parameter) -> (group name, lr, weight decay), checking that no parameter is in two groups."""
    found = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            assert id(parameter) not in found
            found[id(parameter)] = (group["name"], group["lr"], group["weight_decay"])
    return found


def settings_by_name(task: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, tuple[str, float, float]]:
    by_identity = settings_by_parameter(optimizer)
    return {name.removeprefix("model."): by_identity[id(parameter)] for name, parameter in task.named_parameters()}


def test_each_parameter_gets_the_settings_of_its_group_and_biases_and_norms_skip_decay_inside_it():
    task = Task()
    optimizer = cadence.optim.adamw(task, lr=1e-3, weight_decay=0.05, groups=[
        {"params": "encoder.*", "lr": 3e-4},
        {"params": ["workers.*", "model.head.weight"], "lr": 2e-3, "weight_decay": 0.1},  # "model." may be written too
    ])
    assert settings_by_name(task, optimizer) == {
        "encoder.0.weight": ("groups.0", 3e-4, 0.05),  # the optimizer's own decay
        "encoder.0.bias": ("groups.0.no_decay", 3e-4, 0.0),
        "encoder.1.weight": ("groups.0.no_decay", 3e-4, 0.0),  # a norm scale: 1-D
        "encoder.1.bias": ("groups.0.no_decay", 3e-4, 0.0),
        "workers.weight": ("groups.1", 2e-3, 0.1),
        "workers.bias": ("groups.1.no_decay", 2e-3, 0.0),
        "head.weight": ("groups.1", 2e-3, 0.1),
        "head.bias": ("default.no_decay", 1e-3, 0.0),  # matched by no group: the optimizer's own settings
    }
    assert [group["name"] for group in optimizer.param_groups] == [
        "default", "default.no_decay", "groups.0", "groups.0.no_decay", "groups.1", "groups.1.no_decay",
    ]


def test_a_parameter_joins_the_first_group_that_matches_it():
    task = Task()
    optimizer = cadence.optim.sgd(task, lr=0.1, groups=[{"params": "head.weight", "lr": 0.5}, {"params": "head.*", "lr": 0.25}])
    settings = settings_by_name(task, optimizer)
    assert settings["head.weight"] == ("groups.0", 0.5, 0.0)
    assert settings["head.bias"] == ("groups.1", 0.25, 0.0)  # weight decay 0: no split
    assert settings["encoder.0.weight"] == ("default", 0.1, 0.0)


def test_a_group_with_zero_weight_decay_is_one_torch_group_and_decay_bias_and_norm_keeps_them_together():
    task = Task()
    optimizer = cadence.optim.adamw(task, weight_decay=0.01, groups=[{"params": "head.*", "weight_decay": 0.0}])
    assert [group["name"] for group in optimizer.param_groups] == ["default", "default.no_decay", "groups.0"]
    optimizer = cadence.optim.adamw(task, weight_decay=0.01, decay_bias_and_norm=True, groups=[{"params": "head.*"}])
    assert settings_by_name(task, optimizer)["head.bias"] == ("groups.0", 1e-3, 0.01)


@pytest.mark.parametrize("name", FACTORIES)
def test_without_groups_the_parameter_groups_are_those_of_before(name):
    # Checkpoints and resume depend on the group structure: what torch saw before groups existed.
    task = Task()
    optimizer = OPTIMIZERS.get(name)(task, weight_decay=0.01)
    decayed = [parameter for parameter in task.parameters() if parameter.ndim > 1]
    undecayed = [parameter for parameter in task.parameters() if parameter.ndim <= 1]
    assert [[id(parameter) for parameter in group["params"]] for group in optimizer.param_groups] == [
        [id(parameter) for parameter in decayed], [id(parameter) for parameter in undecayed],
    ]
    assert [(group["name"], group["weight_decay"]) for group in optimizer.param_groups] == [
        ("default", 0.01), ("default.no_decay", 0.0),
    ]
    undecayed_optimizer = OPTIMIZERS.get(name)(task, weight_decay=0.0)
    assert [len(group["params"]) for group in undecayed_optimizer.param_groups] == [len(list(task.parameters()))]


def test_frozen_parameters_are_in_no_group_and_a_pattern_only_they_match_is_refused():
    task = Task()
    task.model.encoder.requires_grad_(False)
    optimizer = cadence.optim.adamw(task, groups=[{"params": "head.*", "lr": 1e-4}])
    trainable = {id(parameter) for parameter in task.parameters() if parameter.requires_grad}
    assert set(settings_by_parameter(optimizer)) == trainable
    with pytest.raises(ConfigError, match=r"optimizer\.groups\.0\.params: 'encoder\.\*' matches no trainable parameter"):
        cadence.optim.adamw(task, groups=[{"params": "encoder.*", "lr": 1e-4}])


@pytest.mark.parametrize("name", FACTORIES)
def test_a_pattern_that_matches_nothing_is_refused_with_its_key_and_example_names(name):
    with pytest.raises(ConfigError) as caught:
        OPTIMIZERS.get(name)(Task(), groups=[{"params": "head.*", "lr": 0.1}, {"params": ["workers.*", "encodr.*"], "lr": 0.1}])
    message = str(caught.value)
    assert message.startswith("optimizer.groups.1.params: 'encodr.*' matches no trainable parameter")
    assert "encoder.0.weight" in message and "head.weight" in message


def test_a_group_left_empty_by_the_groups_before_it_is_refused():
    with pytest.raises(ConfigError, match=r"optimizer\.groups\.1\.params: every parameter it matches is taken by an earlier group"):
        cadence.optim.adamw(Task(), groups=[{"params": "*", "lr": 0.1}, {"params": "head.*", "lr": 0.2}])


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize(
    ("group", "location", "kind"),
    [
        ({"params": "head.*", "momentum": 0.9}, ("groups", 0, "momentum"), "extra_forbidden"),
        ({"params": "head.*", "lr": 0.0}, ("groups", 0, "lr"), "greater_than"),
        ({"params": "head.*", "lr": True}, ("groups", 0, "lr"), "bool_not_number"),
        ({"params": "head.*", "weight_decay": -0.1}, ("groups", 0, "weight_decay"), "greater_than_equal"),
        ({"params": [], "lr": 0.1}, ("groups", 0, "params", "list[str]"), "too_short"),
        ({"lr": 0.1}, ("groups", 0, "params"), "missing"),
    ],
)
def test_the_schema_refuses_unknown_keys_and_bad_values_in_a_group(name, group, location, kind):
    with pytest.raises(pydantic.ValidationError) as caught:
        OPTIMIZERS.schema(name).model_validate({"groups": [group]})
    assert (location, kind) in [(problem["loc"], problem["type"]) for problem in caught.value.errors()]


def test_a_recipe_with_groups_resolves_builds_and_writes_back_as_json():
    recipe_dict = {
        "name": "demo",
        "data": {"name": "manifests", "train": "train.jsonl", "target": "none"},
        "model": {"name": "cnn_classifier"},
        "optimizer": {"name": "adamw", "lr": 1e-3, "groups": [
            {"params": "encoder.*", "lr": 3e-4}, {"params": ["workers.*", "head.*"], "lr": 1e-3, "weight_decay": 0.0},
        ]},
    }
    recipe = resolve(validate_recipe(recipe_dict))
    task = Task()
    optimizer = OPTIMIZERS.get("adamw")(**recipe.arguments("optimizer", {}, model=task))
    assert settings_by_name(task, optimizer)["encoder.0.weight"] == ("groups.0", 3e-4, 0.01)
    assert settings_by_name(task, optimizer)["head.bias"] == ("groups.1", 1e-3, 0.0)
    written = json.loads(json.dumps(recipe.to_dict()))["optimizer"]["groups"]
    assert written[1] == {"params": ["workers.*", "head.*"], "lr": 1e-3, "weight_decay": 0.0}
    assert resolve(validate_recipe({**recipe_dict, "optimizer": {"name": "adamw", "groups": written}})).to_dict() == recipe.to_dict()

    recipe_dict["optimizer"]["groups"][0]["momentun"] = 0.9
    with pytest.raises(ConfigError, match=r"optimizer\.groups\.0\.momentun: unknown key; valid keys: params, lr, weight_decay"):
        resolve(validate_recipe(recipe_dict))


def test_groups_given_in_python_are_checked_and_recorded_as_a_config():
    with pytest.raises(ConfigError, match=r"optimizer\.groups\.0\.lr: Input should be greater than 0"):
        cadence.optim.adamw(Task(), groups=[{"params": "head.*", "lr": -1.0}])
    optimizer = cadence.optim.adamw(Task(), groups=[{"params": "head.*", "lr": 0.5}])
    arguments = {name: value for name, value in construction_of(optimizer).arguments.items() if name != "model"}
    written = OPTIMIZERS.schema("adamw").model_validate(arguments).model_dump(mode="json")
    assert written["groups"] == [{"params": "head.*", "lr": 0.5, "weight_decay": None}]


def test_the_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    groups = [{"params": "encoder.*", "lr": 3e-4}, {"params": "head.*", "lr": 2e-3, "weight_decay": 0.0}]
    task = Task()
    optimizer = cadence.optim.adamw(task, groups=groups)
    for _ in range(2):
        optimizer.zero_grad()
        task.model(torch.randn(5, 4)).pow(2).mean().backward()
        optimizer.step()
    save_checkpoint(tmp_path / "checkpoint", {"optimizer": optimizer.state_dict()})
    saved, _ = load_checkpoint(tmp_path / "checkpoint")

    restored = cadence.optim.adamw(task, groups=groups)
    restored.load_state_dict(saved["optimizer"])
    assert [(group["name"], group["lr"], group["weight_decay"]) for group in restored.param_groups] == [
        (group["name"], group["lr"], group["weight_decay"]) for group in optimizer.param_groups
    ]
    for parameter in task.parameters():
        assert torch.equal(restored.state[parameter]["exp_avg"], optimizer.state[parameter]["exp_avg"])
        assert torch.equal(restored.state[parameter]["step"], optimizer.state[parameter]["step"])
