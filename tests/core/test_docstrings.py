"""The examples in docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "lwdsl",
    "lwdsl.language.compiler",
    "lwdsl.language.jsonplan",
    "lwdsl.language.validate",
    "lwdsl.language.selectors",
    "lwdsl.language.diff",
    "lwdsl.cli.explain",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted and not result.failed
