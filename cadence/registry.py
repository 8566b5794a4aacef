"""Registries: the names a recipe may use for each kind of component.

A recipe says ``model: {name: cnn_classifier, channels: 64}``; the ``MODELS``
registry maps ``cnn_classifier`` to a class or factory, and the parameters are
validated against a schema derived from that callable's typed signature. The
signature is the single source of truth: a component's "config class" is its
constructor, so there is no second list of fields to keep in sync.

Every registered component also remembers the arguments it was built with (see
:mod:`cadence.construction`), so a run built in Python from registered components can be
written down as a recipe and rebuilt, as a recipe run can.

Register your own component from your own module, then list that module under
``imports:`` in the recipe (a run built in Python finds it by itself)::

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

import collections.abc
import dataclasses
import difflib
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable

import pydantic

from cadence.bounds import NOT_BOOLEAN
from cadence.construction import mark_bundle, recording
from cadence.errors import ConfigError


def suggest(name: str, candidates: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest candidate, or ""."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


class Registry:
    """Maps names to component factories of one kind (models, callbacks, ...).

    ``variable``: the name users import it by (``MODELS``), for messages. ``injected``: the
    parameters of this kind that cadence passes itself (objects, such as a task's ``model``),
    which are therefore not config keys.
    """

    def __init__(self, kind: str, variable: str, injected: Iterable[str] = ()):
        self.kind = kind
        self.variable = variable
        self.injected = tuple(injected)
        self._factories: dict[str, Callable[..., Any]] = {}
        self._schemas: dict[tuple[str, frozenset[str]], type[pydantic.BaseModel]] = {}

    def register(self, name: str, factory: Callable[..., Any] | None = None):
        """Register ``factory`` under ``name``; usable as a decorator when ``factory`` is omitted.

        The factory is made to record its constructions (:mod:`cadence.construction`): a class
        in place; a function is wrapped, so register functions with the decorator, which puts
        the recording function under the function's own name.
        """

        def add(target: Callable[..., Any]) -> Callable[..., Any]:
            existing = self._factories.get(name)
            if existing is not None and existing is not target:
                raise ValueError(f"{self.kind} '{name}' is already registered to {existing!r}")
            target = recording(target)
            self._factories[name] = target
            return target

        return add(factory) if factory is not None else add

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def name_of(self, factory: Callable[..., Any]) -> str | None:
        """The name ``factory`` is registered under (the first, if several), or None."""
        return next((name for name, registered in self._factories.items() if registered is factory), None)

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

    def schema(self, name: str, exclude: Iterable[str] = ()) -> type[pydantic.BaseModel]:
        """The pydantic model of ``name``'s parameters, minus the injected ones and ``exclude``."""
        key = frozenset((*self.injected, *exclude))
        if (name, key) not in self._schemas:
            self._schemas[name, key] = schema_from_signature(self.get(name), exclude=key)
        return self._schemas[name, key]


def validation_problems(error: pydantic.ValidationError, where: str) -> str:
    """A pydantic error as one line of ``where.key: message`` parts."""
    parts = []
    for problem in error.errors():
        location = ".".join([where, *map(str, problem["loc"])]).strip(".")
        parts.append(f"{location}: {problem['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def check_settings(registry: Registry, name: str, settings: dict[str, Any], exclude: Iterable[str] = ()) -> None:
    """A ValueError for an unknown component or a wrong setting of a component named inside
    another's settings (a ``per_module`` optimizer's members, a PASE task's workers): inside a
    pydantic validator it is reported at the key, so a recipe's mistake fails when it is
    resolved, before anything is built. ``exclude``: parameters the owner fills in itself."""
    if name not in registry:
        raise ValueError(f"unknown {registry.kind} '{name}'{suggest(name, registry.names())}; registered: {', '.join(registry.names())}")
    try:
        registry.schema(name, exclude=exclude).model_validate(settings)
    except pydantic.ValidationError as error:
        raise ValueError(validation_problems(error, "")) from None


def spec_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """A component spec's settings: everything but its registered ``name``."""
    return {key: value for key, value in spec.items() if key != "name"}


def component_spec(registry: Registry, exclude: Iterable[str] = ()) -> Any:
    """The annotation of a setting that describes another registered component,
    ``{name: <registered name>, <its settings>}``: checked when the recipe is resolved
    (unknown name, wrong setting), so the mistake is reported at the key before anything is
    built. ``exclude``: parameters the owner fills in itself.

    >>> spec = pydantic.TypeAdapter(component_spec(MODELS))
    >>> try:
    ...     spec.validate_python({"hidden": 1})
    ... except pydantic.ValidationError as error:
    ...     print(error.errors()[0]["msg"])
    Value error, give the registered model's name: {name: ..., <its settings>}
    """
    excluded = tuple(exclude)

    def check(spec: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(spec.get("name"), str):
            raise ValueError(f"give the registered {registry.kind}'s name: {{name: ..., <its settings>}}")
        check_settings(registry, spec["name"], spec_settings(spec), excluded)
        return spec

    return Annotated[dict[str, Any], pydantic.AfterValidator(check)]


def schema_from_signature(*factories: Callable[..., Any], exclude: Iterable[str] = ()) -> type[pydantic.BaseModel]:
    """Build a strict pydantic model from the typed parameters of one or more callables.

    Parameters without annotation accept anything; ``*args``/``**kwargs`` are not
    configurable (an explicit signature is what lets unknown keys be rejected). Bounds
    written as ``typing.Annotated[int, annotated_types.Ge(1)]`` (or the aliases of
    :mod:`cadence.bounds`) are enforced. Numbers are numbers: an ``int`` or ``float``
    anywhere in an annotation refuses booleans (:func:`refusing_booleans`) and a float refuses
    NaN and infinities; a ``bool`` parameter still takes booleans.
    """
    exclude = set(exclude)
    fields: dict[str, Any] = {}
    for factory in factories:
        target = factory.__init__ if inspect.isclass(factory) else factory
        try:
            hints = typing.get_type_hints(target, include_extras=True)  # extras: keep Annotated bounds
        except Exception:  # unresolved forward references: fall back to "Any"
            hints = {}
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
            annotation = refusing_booleans(hints.get(parameter.name, Any))
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[parameter.name] = (annotation, default)
    config = pydantic.ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, protected_namespaces=(), allow_inf_nan=False,  # no NaN, no inf
    )
    return pydantic.create_model(f"{getattr(factories[0], '__name__', 'Component')}Config", __config__=config, **fields)


# Where refusing_booleans looks for numbers: unions and the usual containers (others are left as they are).
_CONTAINERS = (
    typing.Union, types.UnionType, list, tuple, dict, set, frozenset, collections.abc.Sequence,
    collections.abc.Mapping, collections.abc.Iterable,
)


def refusing_booleans(annotation: Any) -> Any:
    """``annotation`` with each ``int`` and ``float`` in it refusing ``True`` and ``False``, which
    pydantic's lax mode would read as 1 and 0 (``lr: true`` is a mistake, never a learning rate).

    >>> refusing_booleans(list[float])
    list[typing.Annotated[float, NOT_BOOLEAN]]
    >>> refusing_booleans(bool)   # a boolean parameter still takes booleans
    <class 'bool'>
    """
    if annotation is int or annotation is float:
        return Annotated[annotation, NOT_BOOLEAN]
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        # Last among the constraints, so the check runs before the number type converts.
        base, metadata = annotation.__origin__, annotation.__metadata__
        if base is int or base is float:  # the aliases of cadence.bounds carry the check already
            return annotation if NOT_BOOLEAN in metadata else Annotated[(base, *metadata, NOT_BOOLEAN)]
        return Annotated[(refusing_booleans(base), *metadata)]
    arguments = typing.get_args(annotation)
    if origin not in _CONTAINERS or not arguments:
        return annotation
    rewritten = tuple(refusing_booleans(argument) for argument in arguments)
    if origin not in (typing.Union, types.UnionType):
        return origin[rewritten]
    union = typing.Union[rewritten]
    # A number or other types (not just None): one check before them all gives one error, not one per type.
    types_in_union = [_number_type(argument) for argument in arguments if argument is not type(None)]
    has_number = any(member in (int, float) for member in types_in_union)
    takes_booleans = any(member in (bool, Any, object) for member in types_in_union)
    return Annotated[union, NOT_BOOLEAN] if len(types_in_union) > 1 and has_number and not takes_booleans else union


def _number_type(annotation: Any) -> Any:
    """The type under an ``Annotated`` one (``int`` for ``Annotated[int, Ge(1)]``)."""
    return annotation.__origin__ if typing.get_origin(annotation) is Annotated else annotation


@dataclasses.dataclass(eq=False)
class DataBundle:
    """What a registered data builder (``DATASETS``) returns: loaders, and facts for the other
    components (``num_classes``, ``class_names``, ``sample_rate``, a ``tokenizer``).

    ``manifests``: the files the data was read from, by split; their hashes go to
    ``provenance.json``. The loaders are marked as this bundle's (see
    :func:`cadence.construction.bundle_of`), so a run built in Python finds its data builder.
    """

    train: Any
    valid: Any = None
    test: Any = None
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    manifests: dict[str, Path] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        mark_bundle(self, {"train": self.train, "valid": self.valid, "test": self.test})


MODELS = Registry("model", "MODELS")
FEATURES = Registry("feature extractor", "FEATURES")
TASKS = Registry("task", "TASKS", injected=("model", "features", "tokenizer"))
DATASETS = Registry("dataset", "DATASETS", injected=("work_dir", "seed", "experiment_dir"))
OPTIMIZERS = Registry("optimizer", "OPTIMIZERS", injected=("model",))
SCHEDULERS = Registry("LR scheduler", "SCHEDULERS", injected=("optimizer",))
METRICS = Registry("metric", "METRICS")
CALLBACKS = Registry("callback", "CALLBACKS")
# Functions a recipe's stage calls when it starts: fn(epoch, trainer) -> overrides (cadence.config.stages).
STAGE_FUNCTIONS = Registry("stage function", "STAGE_FUNCTIONS")
# What a self-supervised worker learns to predict, computed from the clean batch (cadence.tasks.pase).
LABELLERS = Registry("labeller", "LABELLERS", injected=("sample_rate", "stride"))
# Where a run's figures go besides metrics.jsonl and TensorBoard: experiment.loggers (cadence.loggers).
LOGGERS = Registry("experiment logger", "LOGGERS")
