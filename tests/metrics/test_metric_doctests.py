"""The docstring examples in cadence.metrics run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["cadence.metrics", "cadence.metrics.base", "cadence.metrics.classification", "cadence.metrics.mean"]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    results = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0, f"{module_name} has no examples"
    assert results.failed == 0
