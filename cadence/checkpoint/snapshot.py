"""A dict of Stateful things as one plain state, and putting it back.

Everything that must survive a restart follows PyTorch's ``Stateful`` protocol:
``state_dict()`` / ``load_state_dict()``. :func:`capture` takes a dict of them (or of lists
and dicts of them, or ``None`` for a component a run does not have) and returns one dict of
plain state (tensors, arrays, numbers, strings) that :mod:`cadence.checkpoint.format` saves,
with every random generator added under ``"rng"``. :func:`restore` hands each component its
part, in the dict's order, and the random generators last, so that nothing restored after
them draws a number.

>>> import torch
>>> model = torch.nn.Linear(2, 1)
>>> state = capture({"model": model, "scheduler": None})
>>> sorted(state)
['model', 'rng', 'scheduler']
>>> restore({"model": model, "scheduler": None}, state)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from cadence.checkpoint.rng import load_rng_state, rng_state
from cadence.errors import CheckpointError

__all__ = ["Stateful", "capture", "load_module_state", "restore"]

RNG_KEY = "rng"


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _state_of(component: Any) -> Any:
    if component is None:
        return None
    if isinstance(component, list):
        return [_state_of(item) for item in component]
    if isinstance(component, dict):
        return {key: _state_of(item) for key, item in component.items()}
    return component.state_dict()


def capture(components: Mapping[str, Any]) -> dict[str, Any]:
    """Each component's ``state_dict()`` under its name, plus every random generator's state."""
    return {**{name: _state_of(component) for name, component in components.items()}, RNG_KEY: rng_state()}


def _load(component: Any, state: Any, name: str) -> None:
    if component is None or state is None:
        return  # not part of this run, or saved without one (a schedule added later)
    if isinstance(component, list):
        if not isinstance(state, list):
            raise CheckpointError(f"the state of '{name}' is a {type(state).__name__}, not a list")
        for item, item_state in zip(component, state):
            _load(item, item_state, name)
        return
    if isinstance(component, dict):
        if not isinstance(state, Mapping):
            raise CheckpointError(f"the state of '{name}' is a {type(state).__name__}, not a mapping")
        for key, item in component.items():
            if key not in state:
                raise CheckpointError(
                    f"the checkpoint has no state for {key} in '{name}'; it has {sorted(state)}. "
                    f"Resume with the {name} the run was started with"
                )
            _load(item, state[key], name)
        return
    if isinstance(component, nn.Module):
        load_module_state(component, state, name)
    elif callable(getattr(component, "load_state_dict", None)):
        try:
            component.load_state_dict(state)
        except CheckpointError:
            raise
        except Exception as error:  # a state that verified but does not fit: the checkpoint's fault
            raise CheckpointError(f"the state of '{name}' does not fit this run's {name} ({type(error).__name__}: {error})") from error


def _takes_any_shape(tensor: torch.Tensor) -> bool:
    """A lazy parameter, or an empty buffer that loading resizes (global normalization): its
    shape comes from the checkpoint."""
    return isinstance(tensor, nn.parameter.UninitializedTensorMixin) or tensor.numel() == 0


# How many mismatches an error lists; the rest are counted.
_LISTED = 5


def load_module_state(module: nn.Module, state: Any, name: str = "model") -> None:
    """``module.load_state_dict(state)`` after checking that ``state`` fits: the same keys,
    tensors of the same shapes. Raises :class:`CheckpointError` saying what does not fit, before
    any weight is changed."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"the state of '{name}' is a {type(state).__name__}, not a mapping of tensors")
    expected = module.state_dict()
    problems = [f"unexpected {key}" for key in state if key not in expected]  # what is there that should not be
    problems += [f"missing {key}" for key in expected if key not in state]
    for key, tensor in expected.items():
        given = state.get(key)
        if key not in state or not isinstance(tensor, torch.Tensor):
            continue
        if not isinstance(given, torch.Tensor):
            problems.append(f"{key} is a {type(given).__name__}, not a tensor")
        elif not _takes_any_shape(tensor) and given.shape != tensor.shape:
            problems.append(f"{key} has shape {list(given.shape)}, the model's is {list(tensor.shape)}")
    if problems:
        more = f" and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
        raise CheckpointError(f"the state of '{name}' does not fit this model: {'; '.join(problems[:_LISTED])}{more}")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f"the state of '{name}' does not fit this model ({error})") from error


def restore(components: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Load ``state`` (from :func:`capture`) into ``components``, random generators last."""
    for name, component in components.items():
        _load(component, state.get(name), name)
    try:
        load_rng_state(state[RNG_KEY])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"the random generators' state does not fit ({type(error).__name__}: {error})") from error
