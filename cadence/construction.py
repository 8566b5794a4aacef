"""What a registered component was built with, remembered on the object itself.

A component made by a registered class or factory (see :mod:`cadence.registry`) carries a
:class:`Construction`: the registered callable and the arguments it was called with. That
is what lets a run built in Python be written down as a recipe (``config.yaml``) and
rebuilt later, exactly as a run built from a recipe is.

- A registered **class** records its constructor's arguments, but only on objects whose
  type is exactly that class: a subclass may take other arguments or behave otherwise, so
  rebuilding it as the registered class would not give the same object.
- A registered **function** records its arguments on the object it returns (an optimizer
  made by ``cadence.optim.adamw(task, lr=1e-3)`` remembers ``adamw`` and ``lr``).
- A :class:`~cadence.registry.DataBundle` marks its loaders (:func:`bundle_of`), so the
  loader given to ``fit`` leads back to the data builder that made it.

Records are kept beside the objects, keyed by identity and dropped when the object is
collected (a weak reference's callback): nothing keeps an object alive for its record, and
nothing is added to the object (an LR schedule's ``state_dict`` is its whole ``__dict__``).
An object that takes no weak reference keeps no record (it is reported as not rebuildable).

>>> class Scaled:
...     def __init__(self, factor: float = 2.0): ...
>>> Scaled = recording(Scaled)
>>> construction_of(Scaled()).arguments
{'factor': 2.0}
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import weakref
from typing import Any, Callable

__all__ = ["Construction", "bundle_of", "construction_of", "mark_bundle", "recording"]

_RECORDS = "_cadence_records_construction"  # marks a callable already made to record
# id(object) -> (weak reference to the object, what is recorded about it)
_constructions: dict[int, tuple[weakref.ref, Construction]] = {}
_bundles: dict[int, tuple[weakref.ref, tuple[weakref.ref, str]]] = {}


@dataclasses.dataclass(frozen=True)
class Construction:
    """The registered callable that made an object, and its arguments: every parameter's
    value, defaults included (``**kwargs`` merged in)."""

    factory: Callable[..., Any]
    arguments: dict[str, Any]


def construction_of(component: Any) -> Construction | None:
    """How ``component`` was made, if a registered class or factory made it."""
    return _look_up(_constructions, component)


def bundle_of(loader: Any) -> tuple[Any, str] | None:
    """``(bundle, role)`` when ``loader`` is the ``train``, ``valid`` or ``test`` loader of a data
    bundle that is still alive (a loader does not keep its bundle alive)."""
    found = _look_up(_bundles, loader)
    bundle = found[0]() if found is not None else None
    return (bundle, found[1]) if bundle is not None else None


def mark_bundle(bundle: Any, loaders: dict[str, Any]) -> None:
    """Mark each loader as the ``role`` loader of ``bundle``."""
    for role, loader in loaders.items():
        if loader is not None:
            _remember(_bundles, loader, (weakref.ref(bundle), role))


def recording(factory: Callable[..., Any]) -> Callable[..., Any]:
    """``factory`` made to record its constructions: a class is changed in place (its
    ``__init__`` wrapped), a function is wrapped (use the returned function)."""
    if inspect.isclass(factory):
        # Only the class's own __init__ counts: an inherited one records for its parent class.
        if not getattr(vars(factory).get("__init__"), _RECORDS, False):
            _record_class_constructions(factory)
        return factory
    return factory if getattr(factory, _RECORDS, False) else _recording_function(factory)


def _record_class_constructions(cls: type) -> None:
    original = cls.__init__
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if type(self) is cls:  # a subclass is another component: it records nothing
            _remember(_constructions, self, Construction(cls, _bound(signature, (self, *args), kwargs, skip_first=True)))

    setattr(__init__, _RECORDS, True)
    cls.__init__ = __init__


def _recording_function(function: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(function)

    @functools.wraps(function)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        _remember(_constructions, result, Construction(recorded, _bound(signature, args, kwargs)))
        return result

    setattr(recorded, _RECORDS, True)
    return recorded


def _bound(signature: inspect.Signature, args: tuple, kwargs: dict[str, Any], skip_first: bool = False) -> dict[str, Any]:
    """Every parameter's value in this call, defaults included, by name (``**kwargs`` merged in)."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    if skip_first:
        arguments.pop(next(iter(signature.parameters)))  # self
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            arguments.update(arguments.pop(parameter.name))
        elif parameter.kind is parameter.VAR_POSITIONAL and not arguments[parameter.name]:
            del arguments[parameter.name]  # no extra positional arguments were given
    return arguments


def _look_up(table: dict[int, tuple[weakref.ref, Any]], component: Any) -> Any:
    entry = table.get(id(component))
    return entry[1] if entry is not None and entry[0]() is component else None


def _remember(table: dict[int, tuple[weakref.ref, Any]], component: Any, record: Any) -> None:
    key = id(component)
    try:
        # The callback drops the entry as the object is collected, before its id can be reused.
        reference = weakref.ref(component, lambda dead, key=key: table.pop(key) if table.get(key, (None,))[0] is dead else None)
    except TypeError:
        return  # no weak references (slots, builtins): no record, so reported as not rebuildable
    table[key] = (reference, record)
