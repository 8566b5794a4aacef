"""Bounds on numeric parameters, written where the parameter is declared.

A registered component's constructor is its config schema (:mod:`cadence.registry`), so a
bound in its signature is checked for every recipe, with the key's path, before anything is
built or any folder exists::

    def __init__(self, channels: PositiveInt = 64, kernel_size: OddInt = 5, dropout: ProperFraction = 0.1): ...

Each alias is a ``typing.Annotated`` number with ``annotated_types`` constraints, which
pydantic enforces and type checkers read as a plain ``int`` or ``float``. Two markers add
what ``annotated_types`` lacks: :data:`NOT_BOOLEAN` (``true`` is not the number 1; every
alias carries it) and :data:`ODD`. Nothing here imports pydantic: a marker hands pydantic its
check only when a schema is built.

>>> import pydantic
>>> kernel_size = pydantic.TypeAdapter(OddInt)
>>> kernel_size.validate_python(5)
5
>>> for value in (4, True):
...     try:
...         kernel_size.validate_python(value)
...     except pydantic.ValidationError as error:
...         print(error.errors()[0]["msg"])
Input should be odd
Input should be a valid integer, not a boolean
"""

from __future__ import annotations

from typing import Annotated, Any, Callable

from annotated_types import Ge, Gt, Le, Lt

__all__ = [
    "MonitorKeys", "MonitorModes", "NOT_BOOLEAN", "NonNegativeFloat", "NonNegativeInt", "ODD", "OddInt", "PositiveFloat",
    "PositiveInt", "Probability", "ProperFraction", "Seed",
]


class _NotBoolean:
    """Refuses ``True`` and ``False`` before the number type sees them (pydantic's lax mode
    would read them as 1 and 0). Put it after the other constraints, so it runs first."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import PydanticCustomError, core_schema

        expected = "a valid integer" if source is int else "a valid number"

        def refuse_booleans(value: Any) -> Any:
            if isinstance(value, bool):
                raise PydanticCustomError("bool_not_number", f"Input should be {expected}, not a boolean")
            return value

        return core_schema.no_info_before_validator_function(refuse_booleans, handler(source))

    def __repr__(self) -> str:
        return "NOT_BOOLEAN"


class _Odd:
    """An odd integer: a convolution kernel with "same" padding keeps frames aligned only then."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import PydanticCustomError, core_schema

        def check_odd(value: int) -> int:
            if value % 2 == 0:
                raise PydanticCustomError("odd", "Input should be odd")
            return value

        return core_schema.no_info_after_validator_function(check_odd, handler(source))

    def __repr__(self) -> str:
        return "ODD"


class _OneOrList:
    """A string or a non-empty list of strings (a monitored key and its tie-breakers), from
    ``allowed`` when given; checked as one, as pydantic's own union would report each branch."""

    def __init__(self, what: str, allowed: tuple[str, ...] | None = None) -> None:
        self.what, self.allowed = what, allowed

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import PydanticCustomError, core_schema

        def check(value: Any) -> Any:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not items or not all(
                    isinstance(item, str) and item and (self.allowed is None or item in self.allowed) for item in items):
                raise PydanticCustomError("one_or_list", f"Input should be {self.what}, or a non-empty list of them")
            return value

        return core_schema.no_info_plain_validator_function(check)

    def __repr__(self) -> str:
        return f"ONE_OR_LIST({self.what})"


NOT_BOOLEAN = _NotBoolean()
ODD = _Odd()

# Integers end up in torch and numpy as int64: a larger one is an overflow error deep inside them.
INT64_END = 2**63
PositiveInt = Annotated[int, Ge(1), Lt(INT64_END), NOT_BOOLEAN]  # a count or a size: at least 1
NonNegativeInt = Annotated[int, Ge(0), Lt(INT64_END), NOT_BOOLEAN]  # a count that may be 0 (masks, extra layers, workers)
OddInt = Annotated[int, Ge(1), Lt(INT64_END), ODD, NOT_BOOLEAN]  # a kernel size with "same" padding
PositiveFloat = Annotated[float, Gt(0), NOT_BOOLEAN]  # a rate, a duration, a scale: more than 0
NonNegativeFloat = Annotated[float, Ge(0), NOT_BOOLEAN]  # a weight or a penalty that 0 switches off
Probability = Annotated[float, Ge(0), Le(1), NOT_BOOLEAN]  # in [0, 1]
ProperFraction = Annotated[float, Ge(0), Lt(1), NOT_BOOLEAN]  # in [0, 1): dropout, label smoothing, momentum
Seed = Annotated[int, Ge(0), Lt(2**64), NOT_BOOLEAN]  # what numpy and torch generators both take
# The Trainer's monitor and mode: one, or a list (the monitored value, then its tie-breakers).
MonitorKeys = Annotated["str | list[str]", _OneOrList("a validation key such as 'val/loss'")]
MonitorModes = Annotated["str | list[str]", _OneOrList("'min' or 'max'", allowed=("min", "max"))]
