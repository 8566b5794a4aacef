"""Parameter initialisation by name pattern, as RETURNN's per-layer ``*_init`` options.

A recipe's ``initialization:`` is a list of rules; each parameter takes the FIRST rule whose
``params`` glob matches its name, and keeps the module's own initialisation when none does.
Every rule must take at least one parameter (a rule that matches nothing, or only names that
earlier rules took, is a typo and an error naming ``initialization.<i>.params``).

Random inits draw from the global torch generator, so a run seeded once (the recipe's
``seed``) initialises identically every time. Every rule is checked against every parameter
it takes before any weight changes.

Recurrent weights (``weight_ih*`` / ``weight_hh*`` of ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and
their cells) stack one matrix per gate along dim 0 (LSTM 4: i, f, g, o; GRU 3: r, z, n):
``orthogonal`` makes each gate's block orthogonal, as RETURNN's LSTMs do. The fan-based inits
(xavier, kaiming) see the whole stacked matrix, as ``torch.nn.init`` does.
"""

from __future__ import annotations

from typing import Annotated, Literal, Sequence, Union

import pydantic
import torch
from torch import nn

from cadence.bounds import NonNegativeFloat, PositiveFloat
from cadence.errors import ConfigError
from cadence.weights.names import STRICT, Number, ParameterPattern, examples, matches, owners, validated

__all__ = ["InitRule", "initialize_parameters"]

_GATES = {nn.LSTM: 4, nn.LSTMCell: 4, nn.GRU: 3, nn.GRUCell: 3, nn.RNN: 1, nn.RNNCell: 1}
_LSTMS = (nn.LSTM, nn.LSTMCell)


class _Rule(pydantic.BaseModel):
    model_config = STRICT
    params: ParameterPattern  # glob over the module's parameter names


class XavierRule(_Rule):
    init: Literal["xavier_uniform", "xavier_normal"]
    gain: PositiveFloat = 1.0


class KaimingRule(_Rule):
    init: Literal["kaiming_uniform", "kaiming_normal"]
    mode: Literal["fan_in", "fan_out"] = "fan_in"
    nonlinearity: Literal["relu", "leaky_relu", "linear", "tanh", "sigmoid", "selu"] = "relu"
    negative_slope: NonNegativeFloat = 0.0  # leaky_relu's


class OrthogonalRule(_Rule):
    init: Literal["orthogonal"]
    gain: PositiveFloat = 1.0


class NormalRule(_Rule):
    init: Literal["normal"]
    mean: Number = 0.0
    std: PositiveFloat


class UniformRule(_Rule):
    init: Literal["uniform"]
    a: Number  # lower bound
    b: Number  # upper bound

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> "UniformRule":
        if not self.a < self.b:
            raise ValueError(f"uniform needs a < b, got a={self.a}, b={self.b}")
        return self


class ConstantRule(_Rule):
    init: Literal["constant"]
    value: Number


class ForgetGateBiasRule(_Rule):
    """The forget gate's slice of LSTM biases. PyTorch adds two biases (``bias_ih`` + ``bias_hh``):
    ``bias_ih``'s slice gets ``value`` and ``bias_hh``'s 0, so the gate sees ``value`` as RETURNN's
    single bias would; the other gates' slices (i, g, o) start at 0."""

    init: Literal["forget_gate_bias"]
    value: Number = 1.0


InitRule = Annotated[
    Union[XavierRule, KaimingRule, OrthogonalRule, NormalRule, UniformRule, ConstantRule, ForgetGateBiasRule],
    pydantic.Field(discriminator="init"),
]
_RULES = pydantic.TypeAdapter(list[InitRule])
_INIT_NAMES = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal", "normal", "uniform",
               "constant", "forget_gate_bias")


def initialize_parameters(module: nn.Module, rules: Sequence[InitRule | dict]) -> dict[str, str]:
    """Initialise ``module``'s parameters by ``rules`` (first match wins); returns
    ``{parameter name: what it got}`` for the parameters a rule took.

    >>> _ = torch.manual_seed(0)  # the run's seed
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.LSTM(4, 2))
    >>> report = initialize_parameters(model, [
    ...     {"params": "1.weight_hh*", "init": "orthogonal"},
    ...     {"params": "1.bias*", "init": "forget_gate_bias", "value": 1.0},
    ...     {"params": "*bias", "init": "constant", "value": 0.0}])
    >>> report["1.weight_hh_l0"], report["0.bias"]
    ('initialization.0: orthogonal per gate (4 blocks)', 'initialization.2: constant 0.0')
    >>> model[1].bias_ih_l0.tolist()  # gates i, f, g, o; 2 units each
    [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    """
    rules = validated(_RULES, list(rules), "initialization", _INIT_NAMES)
    holders = owners(module)
    parameters = dict(module.named_parameters())
    taken: dict[str, int] = {}  # parameter name -> index of its rule
    for index, rule in enumerate(rules):
        matched = [name for name in parameters if matches(rule.params, name)]
        mine = [name for name in matched if name not in taken]
        if not matched:
            raise ConfigError(f"initialization.{index}.params: '{rule.params}' matches no parameter; "
                              f"names look like: {examples(rule.params, parameters)}")
        if not mine:
            earlier = sorted({taken[name] for name in matched})
            raise ConfigError(f"initialization.{index}.params: every parameter '{rule.params}' matches was taken by an "
                              f"earlier rule (initialization.{', '.join(map(str, earlier))}; the first match wins): "
                              "move this rule up or narrow the earlier one")
        for name in mine:
            taken[name] = index
    # Check everything first, so that a mistake leaves every weight as it was.
    plans = {name: _plan(rules[index], index, name, parameters[name], *holders[name]) for name, index in taken.items()}
    with torch.no_grad():
        for name in parameters:  # the module's order: the same draws for the same seed
            if name in plans:
                plans[name][0](parameters[name])
    return {name: plans[name][1] for name in parameters if name in plans}


def _plan(rule: _Rule, index: int, name: str, parameter: torch.Tensor, holder: nn.Module, local: str):
    """(a function that initialises ``parameter``, its description) or a ConfigError."""
    where = f"initialization.{index}"
    gates = _GATES.get(type(holder), 1) if local.startswith(("weight_ih", "weight_hh")) else 1
    if rule.init == "forget_gate_bias":
        if not (isinstance(holder, _LSTMS) and local.startswith(("bias_ih", "bias_hh"))):
            what = f"a parameter of {type(holder).__name__}" + (" (gates r, z, n: no forget gate)" if isinstance(holder, (nn.GRU, nn.GRUCell)) else "")
            raise ConfigError(f"{where}.params: forget_gate_bias sets the forget-gate slice of an LSTM's bias_ih / bias_hh, "
                              f"but '{name}' is {what}; narrow the pattern '{rule.params}'")
        value = rule.value if local.startswith("bias_ih") else 0.0  # the LSTM adds the two biases

        def forget_gate(tensor: torch.Tensor) -> None:
            tensor.zero_()
            tensor.chunk(4)[1].fill_(value)  # PyTorch's gate order: i, f, g, o

        return forget_gate, f"{where}: forget_gate_bias (forget gate {value}, other gates 0)"
    if rule.init in ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal") and parameter.dim() < 2:
        raise ConfigError(f"{where}.params: {rule.init} needs a weight of at least 2 dimensions, but '{name}' has shape "
                          f"{list(parameter.shape)}; give it a rule of its own before this one (e.g. init: constant)")
    if rule.init == "orthogonal":
        if gates > 1:
            def per_gate(tensor: torch.Tensor) -> None:
                for block in tensor.chunk(gates):  # contiguous views along dim 0: written in place
                    nn.init.orthogonal_(block, gain=rule.gain)

            return per_gate, f"{where}: orthogonal per gate ({gates} blocks)"
        return (lambda tensor: nn.init.orthogonal_(tensor, gain=rule.gain)), f"{where}: orthogonal"
    if rule.init.startswith("xavier"):
        initialise = nn.init.xavier_uniform_ if rule.init == "xavier_uniform" else nn.init.xavier_normal_
        return (lambda tensor: initialise(tensor, gain=rule.gain)), f"{where}: {rule.init} (gain {rule.gain})"
    if rule.init.startswith("kaiming"):
        initialise = nn.init.kaiming_uniform_ if rule.init == "kaiming_uniform" else nn.init.kaiming_normal_
        return ((lambda tensor: initialise(tensor, a=rule.negative_slope, mode=rule.mode, nonlinearity=rule.nonlinearity)),
                f"{where}: {rule.init} ({rule.mode}, {rule.nonlinearity})")
    if rule.init == "normal":
        return (lambda tensor: nn.init.normal_(tensor, rule.mean, rule.std)), f"{where}: normal (mean {rule.mean}, std {rule.std})"
    if rule.init == "uniform":
        return (lambda tensor: nn.init.uniform_(tensor, rule.a, rule.b)), f"{where}: uniform [{rule.a}, {rule.b})"
    return (lambda tensor: nn.init.constant_(tensor, rule.value)), f"{where}: constant {rule.value}"
