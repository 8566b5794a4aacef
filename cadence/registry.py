"""Registries: the names a recipe may use for each kind of component.

A recipe says ``model: {name: cnn_classifier, channels: 64}``; the ``MODELS``
registry maps ``cnn_classifier`` to a class or factory, and the parameters are
validated against a schema derived from that callable's typed signature. The
signature is the single source of truth: a component's "config class" is its
constructor, so there is no second list of fields to keep in sync.

Register your own component from your own module, then list that module under
``imports:`` in the recipe::

    from torch import nn
    from cadence.registry import MODELS

    @MODELS.register("tiny_mlp")
    class TinyMLP(nn.Module):
        def __init__(self, num_classes: int, hidden: int = 32):
            super().__init__()
            self.layers = nn.Sequential(nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

        def forward(self, inputs):
            return self.layers(inputs)
"""

from __future__ import annotations

import difflib
import inspect
import typing
from typing import Any, Callable, Iterable

import pydantic

from cadence.errors import ConfigError


def suggest(name: str, candidates: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest candidate, or ""."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


class Registry:
    """Maps names to component factories of one kind (models, callbacks, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}
        self._schemas: dict[tuple[str, frozenset[str]], type[pydantic.BaseModel]] = {}

    def register(self, name: str, factory: Callable[..., Any] | None = None):
        """Register ``factory`` under ``name``; usable as a decorator when ``factory`` is omitted."""

        def add(target: Callable[..., Any]) -> Callable[..., Any]:
            existing = self._factories.get(name)
            if existing is not None and existing is not target:
                raise ValueError(f"{self.kind} '{name}' is already registered to {existing!r}")
            self._factories[name] = target
            return target

        return add(factory) if factory is not None else add

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def get(self, name: str, path: str = "name") -> Callable[..., Any]:
        """Return the factory for ``name``; an unknown name is a ConfigError naming ``path``."""
        if name not in self._factories:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(
                f"{path}: unknown {self.kind} '{name}'{suggest(name, self._factories)}; "
                f"registered: {known}. A component of your own must be registered in a module "
                f"listed under 'imports:'"
            )
        return self._factories[name]

    def schema(self, name: str, injected: Iterable[str] = ()) -> type[pydantic.BaseModel]:
        """The pydantic model of ``name``'s parameters, minus those cadence injects itself."""
        key = (name, frozenset(injected))
        if key not in self._schemas:
            self._schemas[key] = schema_from_signature(self.get(name), exclude=key[1])
        return self._schemas[key]


def schema_from_signature(factory: Callable[..., Any], exclude: Iterable[str] = ()) -> type[pydantic.BaseModel]:
    """Build a strict pydantic model from a callable's typed parameters.

    Parameters without annotation accept anything; ``*args``/``**kwargs`` are not
    configurable (an explicit signature is what lets unknown keys be rejected).
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolved forward references: fall back to "Any"
        hints = {}
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(factory).parameters.values():
        if parameter.name in exclude or parameter.name == "self":
            continue
        if parameter.name == "name":
            # In a recipe, "name" says which registered component to build; a parameter of the
            # same name would be overwritten in the resolved config, which then no longer loads.
            raise TypeError(
                f"{getattr(factory, '__qualname__', factory)!r} has a parameter called 'name', which recipes use for the "
                "registered component's name; rename the parameter (e.g. 'prefix' or 'label')"
            )
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(parameter.name, Any)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())
    return pydantic.create_model(f"{getattr(factory, '__name__', 'Component')}Config", __config__=config, **fields)


MODELS = Registry("model")
FEATURES = Registry("feature extractor")
TASKS = Registry("task")
DATASETS = Registry("dataset")
OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("LR scheduler")
METRICS = Registry("metric")
CALLBACKS = Registry("callback")
