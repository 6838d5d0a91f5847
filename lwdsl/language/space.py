"""Search spaces: ``let NAME = choice(...)`` and ``let NAME = range(...)``.

A recipe that declares a variable this way is a *search space*: it compiles (every value of
every choice, and both ends of every range, are bound to the steps and checked as a ``--set``
would be), ``lwdsl search`` picks the values, and ``lwdsl run`` refuses it until each search
variable has one value (``--set NAME=VALUE``).

- ``choice(V1, V2, ...)``: two or more different values, each written as in a recipe
  (``choice(70%, 80%, 90%)``, ``choice(int8, int4)``, ``choice([a.pt], [a.pt, b.pt])``).
- ``range(LOW, HIGH)``: a number from LOW to HIGH, both included; whole numbers when both ends
  are written as whole numbers (``range(1, 4)``), percentages when both are (``range(50%, 95%)``).
- ``range(LOW, HIGH, log)``: sampled evenly on a log scale (LOW > 0), e.g. a learning rate.

A value sampled from a float range is rounded (:meth:`Range.value_text`) before it is used, so
that the recipe written back with it (``best.lw``) runs the very same numbers.

This module holds the plan's side of a space (:class:`Choice`, :class:`Range`, what they
accept) and :func:`pin_source`, which writes a value into a recipe's own text; the sampling
itself is the runner's (:mod:`lwdsl.runner.search`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Callable, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from . import syntax as s
from ..errors import did_you_mean
from .fields import number_text

__all__ = ["Choice", "Range", "SearchVar", "FUNCTIONS", "space_var", "pin_source"]


class Choice(BaseModel):
    """``choice(V1, V2, ...)``: one of two or more values, each in recipe syntax as written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["choice"] = "choice"
    values: tuple[str, ...] = Field(min_length=2, description="the values in recipe syntax, as written")

    def text(self) -> str:
        return f"choice({', '.join(self.values)})"

    def candidates(self) -> tuple[str, ...]:
        """Every value the space can take (each is checked against the steps)."""
        return self.values

    def points(self) -> int:
        return len(self.values)


class Range(BaseModel):
    """``range(LOW, HIGH[, log])``: a number from LOW to HIGH, both included."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["range"] = "range"
    low: float
    high: float
    log: bool = False
    integer: bool = Field(default=False, description="whole numbers (both ends written as whole numbers)")
    percent: bool = Field(default=False, description="written as percentages (both ends)")

    def _end(self, value: float) -> str:
        if self.integer:
            return str(int(value))
        return f"{number_text(round(value * 100, 10))}%" if self.percent else number_text(value)

    def text(self) -> str:
        return f"range({self._end(self.low)}, {self._end(self.high)}{', log' if self.log else ''})"

    def candidates(self) -> tuple[str, ...]:
        return (self._end(self.low), self._end(self.high))

    def points(self) -> float:
        return int(self.high - self.low) + 1 if self.integer else math.inf

    def value_text(self, value: float) -> str:
        """``value`` (a sample of this range) rounded and written as the range's ends are: three
        significant digits on a log scale, a thousandth of the width otherwise, kept inside."""
        if self.integer:
            return str(int(round(value)))
        if self.log:
            digits = 2 - math.floor(math.log10(abs(value))) if value else 3
        else:
            digits = 3 - math.floor(math.log10(self.high - self.low))
        rounded = min(max(round(value, digits), self.low), self.high)
        return self._end(rounded)


SearchVar = Annotated[Union[Choice, Range], Field(discriminator="kind")]

#: The words a ``let`` may call, and what each takes.
FUNCTIONS = {
    "choice": "choice(V1, V2, ...): two or more different values",
    "range": "range(LOW, HIGH) or range(LOW, HIGH, log): numbers with LOW < HIGH",
}


def space_var(name: str, call: s.Call, doc: s.Document, value_of: Callable[[s.Value], Any]) -> Union[Choice, Range]:
    """The search variable ``let name = call`` defines, or a RecipeError at the place that makes
    the space one that cannot be searched.

    Args:
        value_of: turns one argument (a syntax value) into its Python value (variables resolved).
    """
    if call.name not in FUNCTIONS:
        raise doc.error(
            call.name_span,
            f"let {name}: unknown function `{call.name}`",
            expected=list(FUNCTIONS.values()),
            suggestion=did_you_mean(call.name, FUNCTIONS),
        )
    values = [value_of(arg) for arg in call.args]
    if call.name == "choice":
        return _choice(name, call, doc, values)
    return _range(name, call, doc, values)


def _choice(name: str, call: s.Call, doc: s.Document, values: list[Any]) -> Choice:
    if len(values) < 2:
        raise doc.error(
            call.span,
            f"let {name}: a choice of one value is no choice",
            expected="two or more values, e.g. choice(70%, 80%, 90%)",
            hint=f"to fix the value, write it: let {name} = {doc.snippet(call.args[0].span)}",
        )
    seen: dict[str, s.Value] = {}
    for arg, value in zip(call.args, values):
        key = repr(value)
        if key in seen:
            raise doc.error(
                arg.span,
                f"let {name}: `{doc.snippet(arg.span)}` is in the choice twice",
                expected=f"different values (it is the same as `{doc.snippet(seen[key].span)}`)",
            )
        seen[key] = arg
    return Choice(kind="choice", values=tuple(doc.snippet(arg.span) for arg in call.args))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _range(name: str, call: s.Call, doc: s.Document, values: list[Any]) -> Range:
    usage = "range(LOW, HIGH) or range(LOW, HIGH, log), e.g. range(0.001, 0.1, log)"
    if len(values) not in (2, 3):
        raise doc.error(call.span, f"let {name}: range takes two numbers and an optional `log`", expected=usage)
    for arg, value in zip(call.args[:2], values[:2]):
        if not _is_number(value):
            raise doc.error(arg.span, f"let {name}: the ends of a range are numbers", expected=usage)
    log = len(values) == 3
    if log and values[2] != "log":
        raise doc.error(
            call.args[2].span,
            f"let {name}: the third argument of a range is `log`",
            expected=usage,
            suggestion="log" if did_you_mean(str(values[2]), ["log"]) else None,
        )
    low, high = values[0], values[1]
    if low >= high:
        raise doc.error(
            call.span,
            f"let {name}: a range from {doc.snippet(call.args[0].span)} to {doc.snippet(call.args[1].span)} is empty",
            expected="LOW < HIGH"
            + (f", e.g. range({doc.snippet(call.args[1].span)}, {doc.snippet(call.args[0].span)})" if low > high else ""),
            hint=f"to fix the value, write it: let {name} = {doc.snippet(call.args[0].span)}" if low == high else None,
        )
    if log and low <= 0:
        raise doc.error(
            call.args[0].span,
            f"let {name}: a log range starts above 0",
            expected="LOW > 0 with `log`, e.g. range(0.001, 0.1, log)",
        )
    raw = [arg.raw for arg in call.args[:2] if isinstance(arg, s.Scalar)]
    integer = all(isinstance(v, int) for v in values[:2]) and len(raw) == 2
    percent = len(raw) == 2 and all(r.endswith("%") for r in raw)
    return Range(kind="range", low=float(low), high=float(high), log=log, integer=integer, percent=percent)


def pin_source(text: str, file: str, values: Mapping[str, str], notes: Optional[Mapping[str, str]] = None) -> str:
    """``text`` with the value of each ``let NAME`` in ``values`` replaced by ``values[NAME]``
    (recipe syntax), everything else as written; ``notes[NAME]`` becomes a comment at the end of
    that line (``# from choice(70%, 80%, 90%)``). Only the lets of this text: a variable defined
    in a file it uses is not changed here.
    """
    from .parser import parse_document

    doc = parse_document(text, file)
    edits = []
    for statement in doc.statements:
        if isinstance(statement, s.Let) and statement.name in values:
            span = statement.value.span
            new = values[statement.name]
            if notes and statement.name in notes:
                new += f"  # {notes[statement.name]}"
            edits.append((span.start, span.end, new))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text
