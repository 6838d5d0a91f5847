"""Colour on a terminal only: recipe text in ``lwdsl explain`` and in error messages is
highlighted with the Pygments lexer built from the grammar (:mod:`lwdsl.language.highlight`).

Colour is on when the stream the text goes to is a terminal, ``NO_COLOR`` is unset or empty
(https://no-color.org: any other value turns colour off, whatever else is set) and ``TERM`` is
not ``dumb``; ``FORCE_COLOR`` (set and not empty) turns it on where there is no terminal (a CI
log that shows colours), as ``rich`` reads it too. Pygments is imported only when colour is on:
a check in pre-commit or a CI log never pays for it.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

__all__ = ["colour_on", "recipe_highlighter"]


def colour_on(stream: Any) -> bool:
    """Whether text written to ``stream`` may carry colours (see the module's docstring)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def recipe_highlighter(stream: Any) -> Optional[Callable[[str], str]]:
    """A function colouring recipe text (ANSI codes, by the recipe lexer) for ``stream``, or
    None when colour is off there (or Pygments is missing: then the text stays plain)."""
    if not colour_on(stream):
        return None
    try:
        from pygments import highlight
        from pygments.formatters import TerminalFormatter
    except ImportError:  # pragma: no cover - rich depends on Pygments
        return None
    from ..language.highlight import RecipeLexer

    lexer, formatter = RecipeLexer(stripnl=False, ensurenl=False), TerminalFormatter()

    def colour(text: str) -> str:
        return highlight(text, lexer, formatter)

    return colour
