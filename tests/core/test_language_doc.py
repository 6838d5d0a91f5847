"""Every ```lw example in docs/language.md parses, or fails with the message its fence states.

A fence reads ```lw [backend=NAME] [error: MESSAGE]; examples are compiled as if written in
recipes/ (so `use` finds the files there), and `backend=` also runs check_backend.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lwdsl
from lwdsl.errors import RecipeError
from lwdsl.language.validate import check_backend

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "language.md"
FENCE = re.compile(r"^( *)```lw(?P<info>[^\n]*)\n(?P<body>.*?)^\1```$", re.M | re.S)


def examples() -> list:
    found = []
    text = DOC.read_text()
    for match in FENCE.finditer(text):
        line = text[: match.start()].count("\n") + 1
        indent = len(match.group(1))
        body = "".join(row[indent:] for row in match.group("body").splitlines(keepends=True))
        found.append(pytest.param(match.group("info").strip(), body, id=f"line{line}"))
    return found


def test_the_doc_has_examples() -> None:
    assert len(examples()) >= 30


@pytest.mark.parametrize("info, body", examples())
def test_example(info: str, body: str) -> None:
    backend = re.search(r"backend=(\w+)", info)
    error = re.search(r"error: (.*)$", info)
    file = str(ROOT / "recipes" / "doc-example.lw")
    try:
        recipe = lwdsl.parse(body, file=file)
        if backend:
            check_backend(recipe, backend.group(1), load=False)
    except RecipeError as exc:
        assert error, f"a valid example fails:\n{exc.render()}"
        assert error.group(1) in exc.render()
    else:
        assert not error, f"an error example compiles: {body!r}"
