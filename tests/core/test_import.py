"""`import lwdsl` (and the CLI's startup) never imports a framework."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lwdsl

HEAVY = ("torch", "tensorflow", "keras", "tf_keras")


@pytest.mark.parametrize("module", ["lwdsl", "lwdsl.cli.app"])
def test_no_framework_on_import(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_public_api() -> None:
    assert set(lwdsl.__all__) >= {"parse", "load", "Recipe", "RecipeError", "LwdslError"}
    assert issubclass(lwdsl.RecipeError, lwdsl.LwdslError)
    with pytest.raises(AttributeError):
        lwdsl.no_such_thing  # noqa: B018
