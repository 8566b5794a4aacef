"""Optimizer factories with small typed signatures (what a recipe may set).

Registered under their own names; called from Python, they record their arguments too
(``cadence.optim.adamw(task, lr=1e-3)``), so such a run can be rebuilt from its folder.
Bounds: a learning rate and ``eps`` are positive, weight decay is not negative, momentum and
betas lie in [0, 1).

Every factory takes ``groups``: parameters chosen by name pattern that train with their own
learning rate or weight decay (:class:`ParameterGroup`, :func:`parameter_groups`)::

    optimizer:
      name: adamw
      lr: 1.0e-3
      groups:
        - {params: "encoder.*", lr: 3.0e-4}
        - {params: ["workers.*", "head.*"], lr: 1.0e-3, weight_decay: 0.0}
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Annotated, Any, Iterable

import pydantic
import torch
from annotated_types import MinLen
from torch import nn

from cadence.bounds import NonNegativeFloat, PositiveFloat, ProperFraction
from cadence.errors import ConfigError
from cadence.registry import OPTIMIZERS


class ParameterGroup(pydantic.BaseModel):
    """One entry of an optimizer's ``groups``: the trainable parameters whose names match
    ``params`` (one fnmatch pattern, or a list of them) train with this ``lr`` and
    ``weight_decay``; one left out (None) is the optimizer's own. Any other key is refused."""

    # A pydantic model, not a TypedDict: a recipe's unknown key is then reported with the valid ones.
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)

    params: str | Annotated[list[str], MinLen(1)]
    lr: PositiveFloat | None = None
    weight_decay: NonNegativeFloat | None = None

    def patterns(self) -> list[str]:
        return [self.params] if isinstance(self.params, str) else list(self.params)


def parameter_groups(
    model: nn.Module, weight_decay: float, decay_bias_and_norm: bool, groups: Sequence[ParameterGroup | dict] = (),
) -> list[dict]:
    """The torch parameter groups of ``model``'s trainable parameters, each named by a ``"name"`` entry.

    Biases and normalization scales (1-D tensors) skip weight decay: decaying them pulls
    normalization gains toward zero and rarely helps; the split is the common practice, and
    ``decay_bias_and_norm=True`` turns it off. It applies inside each of ``groups`` too.

    ``groups`` (:class:`ParameterGroup`, or dicts of its keys): a parameter joins the first
    group with a pattern that matches its name as ``model.named_parameters()`` gives it
    (``model.encoder.0.weight`` for a task) or that name without a leading ``model.``
    (``encoder.0.weight``), so patterns may be written relative to the task's model. The others
    stay in the default group, first, with the optimizer's own settings. A pattern that matches no
    trainable parameter, or a group left empty by the groups before it, is a ConfigError.

    >>> model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    >>> groups = parameter_groups(model, 0.01, decay_bias_and_norm=False, groups=[{"params": "2.*", "lr": 1e-4}])
    >>> [(group["name"], len(group["params"]), group.get("lr")) for group in groups]
    [('default', 1, None), ('default.no_decay', 3, None), ('groups.0', 1, 0.0001), ('groups.0.no_decay', 1, 0.0001)]
    """
    named = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    groups = [_validated_group(index, group) for index, group in enumerate(groups)]
    default: list[nn.Parameter] = []
    members: list[list[nn.Parameter]] = [[] for _ in groups]
    for name, parameter in named:
        index = next((index for index, group in enumerate(groups) if matches_any(name, group.patterns())), None)
        (default if index is None else members[index]).append(parameter)
    _check_every_group_takes_parameters(groups, members, [name for name, _ in named])

    torch_groups = _decay_split("default", default, weight_decay, decay_bias_and_norm, options={})
    for index, (group, parameters) in enumerate(zip(groups, members)):
        decay = weight_decay if group.weight_decay is None else group.weight_decay
        # Only a learning rate the group sets: the others take the optimizer's default from torch.
        options = {} if group.lr is None else {"lr": group.lr}
        torch_groups += _decay_split(f"groups.{index}", parameters, decay, decay_bias_and_norm, options)
    return torch_groups


def _decay_split(name: str, parameters: list[nn.Parameter], weight_decay: float, decay_bias_and_norm: bool,
                 options: dict[str, Any]) -> list[dict]:
    """One torch group, or two when 1-D tensors must skip weight decay (even if one is empty:
    the group structure must not depend on the model's shapes, for resume)."""
    if decay_bias_and_norm or weight_decay == 0.0:
        return [{"params": parameters, "weight_decay": weight_decay, **options, "name": name}]
    decayed = [parameter for parameter in parameters if parameter.ndim > 1]
    undecayed = [parameter for parameter in parameters if parameter.ndim <= 1]
    return [
        {"params": decayed, "weight_decay": weight_decay, **options, "name": name},
        {"params": undecayed, "weight_decay": 0.0, **options, "name": f"{name}.no_decay"},
    ]


def _validated_group(index: int, group: ParameterGroup | dict) -> ParameterGroup:
    """A recipe's groups arrive validated; a Python caller's dicts are checked here, the same way."""
    try:
        return ParameterGroup.model_validate(group)
    except pydantic.ValidationError as error:
        problems = (f"{'.'.join(['optimizer.groups', str(index), *map(str, problem['loc'])])}: {problem['msg']}"
                    for problem in error.errors())
        raise ConfigError("; ".join(problems)) from None


def matches_any(name: str, patterns: list[str]) -> bool:
    # fnmatchcase: parameter names are case-sensitive on every platform (fnmatch is not on Windows).
    relative = name.removeprefix("model.")
    return any(fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(relative, pattern) for pattern in patterns)


def _check_every_group_takes_parameters(groups: list[ParameterGroup], members: list[list[nn.Parameter]],
                                        names: list[str]) -> None:
    """A pattern that matches nothing is a typo or a frozen module: say so before training
    silently with the default settings."""
    for index, (group, parameters) in enumerate(zip(groups, members)):
        for pattern in group.patterns():
            if not any(matches_any(name, [pattern]) for name in names):
                raise ConfigError(
                    f"optimizer.groups.{index}.params: '{pattern}' matches no trainable parameter; names look like "
                    f"{', '.join(example_names(names)) or '(none are trainable)'} (a leading 'model.' may be left out)"
                )
        if not parameters:
            raise ConfigError(
                f"optimizer.groups.{index}.params: every parameter it matches is taken by an earlier group "
                "(a parameter joins the first group that matches it); make the earlier patterns narrower"
            )


def example_names(names: list[str], count: int = 5) -> list[str]:
    """The first parameter name under each top-level module, without a leading ``model.``."""
    first: dict[str, str] = {}
    for name in names:
        relative = name.removeprefix("model.")
        first.setdefault(relative.split(".")[0], relative)
    return list(first.values())[:count]


@OPTIMIZERS.register("sgd")
def sgd(
    model: nn.Module, lr: PositiveFloat = 0.1, momentum: ProperFraction = 0.9, weight_decay: NonNegativeFloat = 0.0,
    nesterov: bool = False, decay_bias_and_norm: bool = False, groups: Sequence[ParameterGroup] = (),
) -> torch.optim.SGD:
    param_groups = parameter_groups(model, weight_decay, decay_bias_and_norm, groups)
    return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, nesterov=nesterov)


@OPTIMIZERS.register("adam")
def adam(
    model: nn.Module, lr: PositiveFloat = 1e-3, betas: tuple[ProperFraction, ProperFraction] = (0.9, 0.999),
    eps: PositiveFloat = 1e-8, weight_decay: NonNegativeFloat = 0.0, decay_bias_and_norm: bool = False,
    groups: Sequence[ParameterGroup] = (),
) -> torch.optim.Adam:
    param_groups = parameter_groups(model, weight_decay, decay_bias_and_norm, groups)
    return torch.optim.Adam(param_groups, lr=lr, betas=betas, eps=eps)


@OPTIMIZERS.register("adamw")
def adamw(
    model: nn.Module, lr: PositiveFloat = 1e-3, betas: tuple[ProperFraction, ProperFraction] = (0.9, 0.999),
    eps: PositiveFloat = 1e-8, weight_decay: NonNegativeFloat = 0.01, decay_bias_and_norm: bool = False,
    groups: Sequence[ParameterGroup] = (),
) -> torch.optim.AdamW:
    param_groups = parameter_groups(model, weight_decay, decay_bias_and_norm, groups)
    return torch.optim.AdamW(param_groups, lr=lr, betas=betas, eps=eps)


def learning_rates(optimizer: torch.optim.Optimizer) -> Iterable[float]:
    return (group["lr"] for group in optimizer.param_groups)
