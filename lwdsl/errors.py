"""The project's own exceptions and how they are shown to a user.

Every error a user can cause is a :class:`LwdslError`. A recipe that is wrong (syntax,
validation, an op the backend lacks) raises :class:`RecipeError`, which carries where it is
(file:line:col, the source line with a caret), what was found, what is allowed and a
did-you-mean. The CLI catches ``LwdslError`` once, prints :meth:`LwdslError.render` and exits
with :attr:`LwdslError.exit_code`; only ``--debug`` shows a traceback.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

__all__ = ["Location", "LwdslError", "RecipeError", "UsageError", "RunError", "LoadWarning", "did_you_mean"]


@dataclass(frozen=True)
class Location:
    """A place in a recipe: 1-based line and column, the file (or ``<string>``) and its line."""

    file: str = "<string>"
    line: int = 0
    col: int = 0
    source_line: str = ""
    width: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file

    def caret(self, highlight: Callable[[str], str] | None = None) -> str:
        """The source line with a caret under the column (empty when there is no line);
        ``highlight`` colours the source line (the caret is placed by the plain text)."""
        if not self.line or not self.source_line:
            return ""
        line, col, width = self.source_line, max(self.col - 1, 0), max(self.width, 1)
        if len(line) > _CARET_WINDOW:  # a very long line: show the part around the column
            start = max(0, min(col - _CARET_WINDOW // 3, len(line) - _CARET_WINDOW))
            cut = line[start : start + _CARET_WINDOW]
            left, right = ("..." if start else ""), ("..." if start + _CARET_WINDOW < len(line) else "")
            line, col = left + cut + right, col - start + len(left)
            width = max(1, min(width, len(cut) - (col - len(left))))
        pad = "".join(c if c == "\t" else " " for c in line[:col])
        return f"    {highlight(line) if highlight else line}\n    {pad}{'^' * width}"


#: Characters of a source line shown under an error (longer lines are cut around the column).
_CARET_WINDOW = 100


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The nearest valid word to ``word`` among ``choices``, or None if nothing is close."""
    options = [c for c in choices if c]
    hits = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not hits:
        lowered = {c.lower(): c for c in options}
        hits = [lowered[word.lower()]] if word.lower() in lowered else []
    return hits[0] if hits else None


class LwdslError(Exception):
    """Base of every error lwdsl raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self, highlight: Callable[[str], str] | None = None) -> str:
        """The message for a person: ``error: ...`` and the hint (``highlight``: see
        :meth:`RecipeError.render`)."""
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class RecipeError(LwdslError):
    """A recipe that cannot be parsed, validated or run by the chosen backend (exit code 2).

    Args:
        message: what is wrong, naming the step and argument where there is one.
        location: where in the recipe.
        expected: what is allowed there.
        found: the bad value as written.
        suggestion: the nearest valid word (rendered as "did you mean ...?").
        hint: how to fix it, when that is not obvious from the rest.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        location: Location | None = None,
        *,
        expected: Sequence[str] | str | None = None,
        found: str | None = None,
        suggestion: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.location = location
        self.expected = expected
        self.found = found
        self.suggestion = suggestion

    def render(self, highlight: Callable[[str], str] | None = None) -> str:
        """Where, what, the source line with a caret, what was found and expected, and how to
        fix it. ``highlight`` colours the recipe's source line (the CLI gives it on a terminal)."""
        where = f"{self.location}: " if self.location else ""
        lines = [f"{where}error: {self.message}"]
        if self.location and self.location.caret():
            lines.append(self.location.caret(highlight))
        if self.found is not None:
            lines.append(f"  found: {self.found}")
        if self.expected:
            exp = self.expected if isinstance(self.expected, str) else ", ".join(self.expected)
            lines.append(f"  expected: {exp}")
        if self.suggestion:
            lines.append(f"  did you mean `{self.suggestion}`?")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


class UsageError(LwdslError):
    """A bad command-line value or input file, found before any work (exit code 2): an
    unknown model, data set or backend name, an ``--out`` that must not be replaced, a value
    out of range, a file that is too large or damaged."""

    exit_code = 2


class RunError(LwdslError):
    """A run that failed after it started (bad data, NaN loss, missing files): exit code 1."""

    exit_code = 1


class LoadWarning(UserWarning):
    """What loading a model changed or could not keep (a tied head untied, codes read as
    float32): a run puts each one in its baseline row's warnings."""
