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

from cadence.checkpoint.rng import load_rng_state, rng_state
from cadence.errors import CheckpointError

__all__ = ["Stateful", "capture", "restore"]

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
        for item, item_state in zip(component, state):
            _load(item, item_state, name)
        return
    if isinstance(component, dict):
        for key, item in component.items():
            if key not in state:
                raise CheckpointError(
                    f"the checkpoint has no state for {key} in '{name}'; it has {sorted(state)}. "
                    f"Resume with the {name} the run was started with"
                )
            _load(item, state[key], name)
        return
    if callable(getattr(component, "load_state_dict", None)):
        component.load_state_dict(state)


def restore(components: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Load ``state`` (from :func:`capture`) into ``components``, random generators last."""
    for name, component in components.items():
        _load(component, state.get(name), name)
    load_rng_state(state[RNG_KEY])
