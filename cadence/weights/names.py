"""What the three weight sections share: name patterns, who owns a parameter, recipe errors.

Patterns are shell-style globs (:func:`fnmatch.fnmatchcase`) over the names a module's
``named_parameters()`` / ``state_dict()`` gives, so ``*`` also crosses dots:
``"model.*weight_hh*"`` matches ``model.recurrent_layers.0.weight_hh_l0``.
"""

from __future__ import annotations

import difflib
from fnmatch import fnmatchcase
from typing import Annotated, Any, Iterable

import pydantic
from torch import nn

from cadence.bounds import NOT_BOOLEAN
from cadence.errors import ConfigError

__all__ = ["Number", "ParameterPattern", "STRICT", "examples", "listed", "matches", "owners", "validated"]

# Every section model: unknown keys and non-finite numbers are recipe mistakes.
STRICT = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)
ParameterPattern = Annotated[str, pydantic.StringConstraints(min_length=1, strip_whitespace=True)]
Number = Annotated[float, NOT_BOOLEAN]  # "value: true" is not the number 1

_SHOWN = 5  # names listed in a message before "and N more"


def matches(pattern: str, name: str) -> bool:
    """Whether ``name`` matches the glob ``pattern`` (case-sensitive; ``*`` crosses dots).

    >>> matches("*lstm*bias*", "encoder.lstm.bias_ih_l0"), matches("*.bias", "lstm.bias_ih_l0")
    (True, False)
    """
    return fnmatchcase(name, pattern)


def examples(pattern: str, names: Iterable[str]) -> str:
    """A few of ``names`` to show beside a pattern that matched nothing: the closest first."""
    names = list(names)
    close = difflib.get_close_matches(pattern.replace("*", ""), names, n=_SHOWN, cutoff=0.3)
    shown = close + [name for name in names if name not in close][: _SHOWN - len(close)]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return ", ".join(shown) + more if shown else "none (the module has no parameters)"


def listed(items: list[str]) -> str:
    """``a, b, c and 4 more``: a list short enough for one log line."""
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def owners(module: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Each parameter's full name -> (the module that holds it, its name there): what tells an
    LSTM's ``weight_hh_l0`` (4 gate blocks) from a Linear's ``weight``."""
    found = {}
    for prefix, child in module.named_modules():
        for local, _ in child.named_parameters(recurse=False):
            found[f"{prefix}.{local}" if prefix else local] = (child, local)
    return found


def validated(adapter: pydantic.TypeAdapter, value: Any, section: str, tags: Iterable[str] = ()) -> Any:
    """``value`` as the section's models (given as models or as plain recipe dicts); a mistake
    is one :class:`ConfigError` line per problem, each with its full key path. ``tags``: the
    names of a tagged union (``init: orthogonal``), which pydantic puts in the path and a
    recipe does not have."""
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as error:
        tags = set(tags)
        problems = [f"{'.'.join([section, *(str(part) for part in problem['loc'] if part not in tags)])}: {problem['msg']}"
                    for problem in error.errors()]
        raise ConfigError("; ".join(problems)) from None
