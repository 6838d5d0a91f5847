"""Bad recipes a new user would write, and the exact message each gets.

``bad/NAME.lw`` is compiled from inside ``bad/`` (so messages name it ``NAME.lw``) and the
rendered error must equal ``bad/NAME.expected``. A first line ``# golden: backend=NAME`` also
runs the backend check. After changing messages on purpose, rewrite the expected files with
``LWDSL_UPDATE_GOLDEN=1 pytest tests/golden`` and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.language.validate import check_backend

BAD = Path(__file__).parent / "bad"
CASES = sorted(BAD.glob("*.lw"))


def render(path: Path) -> str:
    backend = re.match(r"# golden: backend=(\w+)", path.read_text())
    try:
        recipe = lwdsl.load(path.name)
        if backend:
            check_backend(recipe, backend.group(1), load=False)
    except RecipeError as exc:
        return exc.render() + "\n"
    raise AssertionError(f"{path.name} compiles, but is in tests/golden/bad")


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_message(path: Path, monkeypatch) -> None:
    monkeypatch.chdir(BAD)
    message = render(path)
    expected = path.with_suffix(".expected")
    if os.environ.get("LWDSL_UPDATE_GOLDEN"):
        expected.write_text(message)
    assert message == expected.read_text()
    assert re.match(rf"{re.escape(path.name)}:\d+:\d+: error: ", message) or "include/" in message
    assert "\n    " in message and "^" in message  # the source line and a caret
    assert "\n  found: " in message and "\n  expected: " in message
