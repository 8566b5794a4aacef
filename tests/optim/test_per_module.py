"""One optimizer per module, each with its own schedule: the split of the parameters, the
steps each member takes, the schedules, the state, and the mistakes refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cadence.errors import ConfigError
from cadence.optim.control import as_driver
from cadence.optim.per_module import OptimizerSet, per_module, per_module_schedules


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict({"encoder": nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4)), "head": nn.Linear(4, 2)})


MODULES = {"encoder": {"params": "encoder.*", "name": "adam", "lr": 1e-2},
           "head": {"params": ["head.*"], "name": "sgd", "lr": 0.1, "momentum": 0.5}}


def loss(network: nn.Module, step: int) -> torch.Tensor:
    inputs = torch.linspace(-1, 1, 6).reshape(2, 3) * (step + 1)
    return network["head"](network["encoder"](inputs)).pow(2).mean()


def test_each_module_is_stepped_by_its_own_optimizer_exactly_as_alone():
    together, alone = model(), model()
    optimizers = per_module(together, MODULES)
    encoder = torch.optim.Adam(alone["encoder"].parameters(), lr=1e-2)
    head = torch.optim.SGD(alone["head"].parameters(), lr=0.1, momentum=0.5)
    for step in range(3):
        loss(together, step).backward()
        optimizers.step()
        optimizers.zero_grad()
        loss(alone, step).backward()
        encoder.step(), head.step()
        encoder.zero_grad(), head.zero_grad()
    for (name, mine), (_, reference) in zip(together.named_parameters(), alone.named_parameters()):
        assert torch.equal(mine, reference), name
    assert [len(group["params"]) for group in optimizers.param_groups] == [4, 2]


def test_a_parameter_joins_the_first_module_that_matches_it():
    optimizers = per_module(model(), {"first": {"params": "encoder.0.*", "name": "sgd"},
                                      "rest": {"params": "*", "name": "adam"}})
    shares = {name: sum(parameter.numel() for group in member.param_groups for parameter in group["params"])
              for name, member in optimizers.optimizers.items()}
    assert shares == {"first": 3 * 4 + 4, "rest": 4 * 4 + 4 + 4 * 2 + 2}


@pytest.mark.parametrize("modules, message", [
    ({"encoder": {"params": "encoder.*", "name": "adam"}}, "no module takes 2 trainable parameter(s): head.weight, head.bias"),
    ({"encoder": {"params": "encodr.*", "name": "adam"}, "rest": {"params": "*", "name": "adam"}},
     "optimizer.modules.encoder.params: 'encodr.*' takes no trainable parameter"),
    ({"all": {"params": "*", "name": "adam", "lrr": 0.1}}, "optimizer.modules.all: lrr: Extra inputs are not permitted"),
    ({"all": {"params": "*", "name": "adma"}}, "unknown optimizer 'adma' (did you mean 'adam'?)"),
    ({}, "optimizer.modules: name at least one module"),
])
def test_mistakes_are_refused_naming_the_key(modules, message):
    with pytest.raises((ConfigError, ValueError), match=None) as error:
        per_module(model(), modules)
    assert message in str(error.value), str(error.value)


def test_frozen_parameters_need_no_module():
    network = model()
    network["head"].requires_grad_(False)
    optimizers = per_module(network, {"encoder": {"params": "encoder.*", "name": "adam"}})
    assert list(optimizers.optimizers) == ["encoder"]


def rates(optimizers: OptimizerSet) -> dict[str, float]:
    return {name: member.param_groups[0]["lr"] for name, member in optimizers.optimizers.items()}


def test_each_module_follows_its_own_schedule_and_one_without_keeps_its_rate():
    optimizers = per_module(model(), {**MODULES, "spare": {"params": "*", "name": "sgd", "lr": 0.5}} | {
        "encoder": {"params": "encoder.0.*", "name": "adam", "lr": 1e-2}})
    schedules = per_module_schedules(optimizers, {
        "encoder": {"name": "phases", "phases": [{"kind": "warmup", "steps": 4}]},
        "head": {"name": "exponential", "gamma": 0.5, "interval": "step"},
    })
    driver = as_driver(schedules, "epoch")
    seen = []
    for step in range(3):
        driver.before_update(step, epoch=0)
        seen.append(rates(optimizers))
        optimizers.step()
        driver.after_update()
    assert [rate["encoder"] for rate in seen] == pytest.approx([2.5e-3, 5e-3, 7.5e-3])  # warmup by update
    assert [rate["head"] for rate in seen] == pytest.approx([0.1, 0.05, 0.025])  # halved after each update
    assert [rate["spare"] for rate in seen] == [0.5, 0.5, 0.5]


def test_the_state_of_every_member_and_schedule_survives_a_round_trip():
    def setup(network):
        optimizers = per_module(network, MODULES)
        schedules = per_module_schedules(optimizers, {"encoder": {"name": "phases", "phases": [{"kind": "warmup", "steps": 10}]},
                                                      "head": {"name": "exponential", "gamma": 0.9, "interval": "step"}})
        return optimizers, schedules

    def train(network, optimizers, schedules, steps):
        for step in steps:
            schedules.before_update(step, 0)
            loss(network, step).backward()
            optimizers.step()
            optimizers.zero_grad()
            schedules.after_update()

    straight = model()
    optimizers, schedules = setup(straight)
    train(straight, optimizers, schedules, range(6))
    first = model()
    optimizers, schedules = setup(first)
    train(first, optimizers, schedules, range(3))
    saved = copy.deepcopy((first.state_dict(), optimizers.state_dict(), schedules.state_dict()))
    resumed = model()
    resumed.load_state_dict(saved[0])
    optimizers, schedules = setup(resumed)
    optimizers.load_state_dict(saved[1])
    schedules.load_state_dict(saved[2])
    train(resumed, optimizers, schedules, range(3, 6))
    for (name, mine), (_, reference) in zip(resumed.named_parameters(), straight.named_parameters()):
        assert torch.equal(mine, reference), name
    with pytest.raises(ValueError, match=r"saved optimizers are for modules \['encoder', 'head'\]; this run has \['all'\]"):
        per_module(model(), {"all": {"params": "*", "name": "adam"}}).load_state_dict(saved[1])


def test_schedules_are_only_for_the_optimizer_modules():
    optimizers = per_module(model(), MODULES)
    with pytest.raises(ConfigError, match="scheduler.modules: decoder is not a module of the optimizer; its modules are encoder, head"):
        per_module_schedules(optimizers, {"decoder": {"name": "exponential", "gamma": 0.5}})
    with pytest.raises(ConfigError, match="per_module schedules the modules of a per_module optimizer"):
        per_module_schedules(torch.optim.SGD(model().parameters(), lr=0.1), {"head": {"name": "exponential", "gamma": 0.5}})
    with pytest.raises(ConfigError, match="scheduler.modules.head: gamma: Field required; gama: Extra inputs are not permitted"):
        per_module_schedules(optimizers, {"head": {"name": "exponential", "gama": 0.5}})


def test_reading_the_merged_state_adds_nothing_to_a_member():
    network = model()
    optimizers = per_module(network, MODULES)
    loss(network, 0).backward()
    optimizers.step()
    assert all(optimizers.state.get(parameter) for parameter in network.parameters())  # what a resume check reads
    assert [len(member.state) for member in optimizers.optimizers.values()] == [4, 2]
    optimizers.state_dict()  # a member holding another's parameter could not be saved
