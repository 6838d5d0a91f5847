"""The syntax tree of a recipe: what was written and where, before it means anything.

:mod:`lwdsl.language.parser` builds these nodes from text; :mod:`lwdsl.language.compiler` gives them meaning
(ops, fields, variables) and :mod:`lwdsl.language.formatter` writes them back. Every node keeps its
:class:`Span`, so any later error can point at the exact place in the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Optional, Union

from ..errors import Location, RecipeError

__all__ = [
    "Span",
    "Scalar",
    "Ratio",
    "Var",
    "Pair",
    "ListValue",
    "Value",
    "Option",
    "Clause",
    "Argument",
    "Step",
    "Version",
    "Name",
    "Target",
    "Let",
    "Call",
    "Use",
    "Statement",
    "Document",
]


class Span(NamedTuple):
    """Where a node was written: 1-based line and column, and offsets into the text (a named
    tuple: a large recipe has a million of them, and a tuple is made five times faster)."""

    line: int
    col: int
    end_line: int
    end_col: int
    start: int
    end: int

    @property
    def width(self) -> int:
        """Columns the node covers on its first line (at least 1)."""
        return max(self.end_col - self.col, 1) if self.end_line == self.line else 1


@dataclass(frozen=True)
class Scalar:
    """A number, percentage, boolean, bare word or quoted string: its value and its text."""

    value: Union[int, float, bool, str]
    raw: str
    span: Span
    quoted: bool = False

    @property
    def is_word(self) -> bool:
        return isinstance(self.value, str) and not self.quoted


@dataclass(frozen=True)
class Ratio:
    """An N:M ratio as written (``2:4``); checked later, by the spec."""

    n: int
    m: int
    raw: str
    span: Span


@dataclass(frozen=True)
class Var:
    """A use of a variable: ``$NAME``."""

    name: str
    span: Span


@dataclass(frozen=True)
class Pair:
    """``teacher_layer->student_layer``."""

    teacher: Scalar
    student: Scalar
    span: Span


@dataclass(frozen=True)
class ListValue:
    """``[a, b, c]``."""

    items: tuple["Value", ...]
    span: Span


Value = Union[Scalar, Ratio, Var, Pair, ListValue]


@dataclass(frozen=True)
class Option:
    """``key=value`` (or ``key>=value`` when ``at_least``)."""

    key: str
    value: Value
    span: Span
    at_least: bool = False


@dataclass(frozen=True)
class Clause:
    """``on p, q`` or ``except p, q``: bare words name kinds, quoted strings are globs."""

    keyword: Literal["on", "except"]
    patterns: tuple[Scalar, ...]
    span: Span


Argument = Union[Value, Option, Clause]


@dataclass(frozen=True)
class Step:
    """An operation word followed by its arguments in the order written."""

    op: str
    op_span: Span
    args: tuple[Argument, ...]
    span: Span


@dataclass(frozen=True)
class Version:
    """``lwdsl N``: the language version the recipe is written in."""

    number: int
    span: Span


@dataclass(frozen=True)
class Name:
    """``recipe "name"``."""

    value: Value
    span: Span


@dataclass(frozen=True)
class Target:
    """``target MODEL on DATA`` (``on DATA`` optional)."""

    model: Value
    data: Optional[Value]
    span: Span


@dataclass(frozen=True)
class Call:
    """``choice(a, b, c)`` or ``range(low, high, log)``: a free value of a search space,
    written only as the value of a ``let`` (the compiler knows the words)."""

    name: str
    name_span: Span
    args: tuple[Value, ...]
    span: Span


@dataclass(frozen=True)
class Let:
    """``let NAME = VALUE`` (or ``let NAME = choice(...)``/``range(...)``: a search variable)."""

    name: str
    value: Union[Value, Call]
    span: Span


@dataclass(frozen=True)
class Use:
    """``use "other.lw"``: the other file's variables and steps, here."""

    path: Scalar
    span: Span


Statement = Union[Step, Version, Name, Target, Let, Use]


@dataclass(frozen=True)
class Document:
    """One parsed file: its statements in order, with the text they came from."""

    statements: tuple[Statement, ...]
    file: str
    text: str
    lines: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", tuple(self.text.split("\n")))  # as Lark counts lines

    def location(self, span: Span) -> Location:
        """The :class:`~lwdsl.errors.Location` of ``span`` in this file, for error messages."""
        return _location(self.lines, self.file, span.line, span.col, span.width)

    def snippet(self, span: Span) -> str:
        """The text under ``span`` with its whitespace collapsed (how a step is named)."""
        return " ".join(self.text[span.start : span.end].split())

    def error(self, span: Span, message: str, **details: Any) -> RecipeError:
        """A RecipeError at ``span``; ``found`` is the text there unless given."""
        details.setdefault("found", self.snippet(span))
        return RecipeError(message, self.location(span), **details)


def location_in(text: str, file: str, line: int, col: int, width: int = 1) -> Location:
    """A Location at ``line``:``col`` of ``text`` (the source line is taken from the text)."""
    return _location(text.split("\n"), file, line, col, width)


def _location(lines, file: str, line: int, col: int, width: int) -> Location:
    source_line = lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""
    return Location(file=file, line=line, col=col, source_line=source_line, width=width)
