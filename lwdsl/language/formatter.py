"""The canonical layout of recipes: for a plan (``Recipe.to_text``) and for source (``lwdsl fmt``).

The layout: header lines (``lwdsl``, ``recipe``, ``target``, ``let``, ``use``), a blank line,
then one step per line. In a step, bare values come first in the spec's ``positional`` order,
then ``key=value`` options in the spec's field order, then the selector
(``on ... except ... expect=N``). A plan writes every option that was given or differs from
its default, so ``parse(r.to_text()) == r``.

:func:`format_source` lays out a file's own text the same way without compiling it: ``use``
and ``$NAME`` stay as written, and so do comments (own-line comments stay above the statement
they precede, end-of-line comments stay at the end of their statement's line).
"""

from __future__ import annotations

import re
from typing import Any, Optional

from pydantic import BaseModel

from . import syntax as s
from .fields import accepts, is_flag, number_text, options
from .parser import comments, parse_document
from .specs import OPS, FeaturePair, Glob, NMRatio, Selector, StepSpec

__all__ = ["recipe_to_text", "step_to_text", "selector_to_text", "value_to_text", "format_source"]

_WORD = re.compile(r"[A-Za-z_](?:[A-Za-z0-9_.:/]|-(?!>))*")
_KEYWORDS = {"on", "except", "true", "false", "lwdsl", "recipe", "target", "let", "use"}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(text: str) -> str:
    """``text`` as a quoted recipe string."""
    return '"' + "".join(_ESCAPES.get(c, c) for c in text) + '"'


def _word_or_quoted(text: str) -> str:
    return text if _WORD.fullmatch(text) and text not in _KEYWORDS else quote(text)


def value_to_text(value: Any) -> str:
    """A Python value of a spec field (or a variable) in recipe syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, str):
        return _word_or_quoted(value)
    if isinstance(value, NMRatio):
        return str(value)
    if isinstance(value, FeaturePair):
        return f"{_word_or_quoted(value.teacher)}->{_word_or_quoted(value.student)}"
    if isinstance(value, Glob):
        return quote(value.glob)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_to_text(v) for v in value) + "]"
    if isinstance(value, dict) and set(value) in ({"n", "m"}, {"teacher", "student"}):
        return value_to_text((NMRatio if "n" in value else FeaturePair).model_validate(value))
    raise TypeError(f"no recipe syntax for {value!r}")


def selector_to_text(selector: Selector) -> str:
    """``on conv, "fc*" except norm expect>=2``."""
    parts = []
    if selector.on:
        parts.append("on " + ", ".join(value_to_text(p) for p in selector.on))
    if selector.except_:
        parts.append("except " + ", ".join(value_to_text(p) for p in selector.except_))
    if selector.expect is not None:
        parts.append(f"expect{'>=' if selector.expect_at_least else '='}{selector.expect}")
    return " ".join(parts)


def _written(step: BaseModel, name: str) -> bool:
    """Whether the canonical text writes field ``name``: given or not the default (and not
    None, which the language has no word for: a None field is always the default one)."""
    value = getattr(step, name)
    return value is not None and (name in step.model_fields_set or value != type(step).model_fields[name].default)


def step_to_text(step: StepSpec, variables: Optional[dict[str, str]] = None) -> str:
    """One step in canonical form, e.g. ``prune global l1 0.2 on conv``; a field named in
    ``variables`` (``{field: NAME}``) is written ``$NAME``."""
    spec = type(step)
    named = variables or {}

    def text(name: str) -> str:
        return f"${named[name]}" if name in named else value_to_text(getattr(step, name))

    parts = [step.op]
    skipped: list[str] = []  # positional fields left at their default
    keyed: list[str] = []
    for name in spec.positional:
        value = getattr(step, name)
        if not _written(step, name):
            skipped.append(name)
        elif any(accepts(spec, other, value) for other in skipped) or (isinstance(value, str) and is_flag(spec, value)):
            keyed.append(name)  # bare, it would land in an earlier field: write it key=value
        else:
            parts.append(text(name))
    for name in options(spec):
        if (name not in spec.positional or name in keyed) and _written(step, name):
            parts.append(f"{name}={text(name)}")
    if step.selector is not None:
        parts.append(selector_to_text(step.selector))
    return " ".join(p for p in parts if p)


def recipe_to_text(recipe) -> str:
    """The recipe in canonical layout; ``parse(recipe_to_text(r)) == r``."""
    header = []
    if "version" in recipe.model_fields_set:
        header.append(f"lwdsl {recipe.version}")
    if recipe.name is not None:
        header.append(f"recipe {quote(recipe.name)}")
    if recipe.target is not None:
        on = f" on {_word_or_quoted(recipe.target.data)}" if recipe.target.data is not None else ""
        header.append(f"target {_word_or_quoted(recipe.target.model)}{on}")
    header += [
        f"let {name} = {recipe.space[name].text() if name in recipe.space else value_to_text(value)}"
        for name, value in recipe.variables.items()
    ]
    steps = [step_to_text(step, recipe.space_uses(i)) for i, step in enumerate(recipe.steps)]
    return "\n".join(header + ([""] if header and steps else []) + steps) + "\n"


# --- source formatting ----------------------------------------------------------------------


def _source_value(value: s.Value) -> str:
    if isinstance(value, s.ListValue):
        return "[" + ", ".join(_source_value(v) for v in value.items) + "]"
    if isinstance(value, s.Pair):
        return f"{value.teacher.raw}->{value.student.raw}"
    if isinstance(value, s.Var):
        return f"${value.name}"
    return value.raw


def _source_step(step: s.Step) -> str:
    """A step's arguments in canonical order, each spelt as written."""
    spec = OPS.get(step.op)
    order = {name: i for i, name in enumerate(options(spec))} if spec else {}

    def is_option(arg: s.Argument) -> bool:
        flag = isinstance(arg, s.Scalar) and arg.is_word and spec is not None and is_flag(spec, arg.value)
        return flag or (isinstance(arg, s.Option) and arg.key != "expect")

    def key(arg: s.Argument) -> str:
        return arg.key if isinstance(arg, s.Option) else str(arg.value)

    def text(arg: s.Argument) -> str:
        if isinstance(arg, s.Clause):
            return f"{arg.keyword} " + ", ".join(p.raw for p in arg.patterns)
        if isinstance(arg, s.Option):
            return f"{arg.key}{'>=' if arg.at_least else '='}{_source_value(arg.value)}"
        return _source_value(arg)

    bare = [a for a in step.args if not isinstance(a, (s.Option, s.Clause)) and not is_option(a)]
    opts = sorted((a for a in step.args if is_option(a)), key=lambda a: order.get(key(a), len(order)))
    clauses = [a for a in step.args if isinstance(a, s.Clause) and a.keyword == "on"]
    clauses += [a for a in step.args if isinstance(a, s.Clause) and a.keyword == "except"]
    expect = [a for a in step.args if isinstance(a, s.Option) and a.key == "expect"]
    return " ".join([step.op] + [text(a) for a in bare + opts + clauses + expect])


def _source_statement(statement: s.Statement) -> str:
    if isinstance(statement, s.Step):
        return _source_step(statement)
    if isinstance(statement, s.Version):
        return f"lwdsl {statement.number}"
    if isinstance(statement, s.Name):
        return f"recipe {_source_value(statement.value)}"
    if isinstance(statement, s.Target):
        on = f" on {_source_value(statement.data)}" if statement.data is not None else ""
        return f"target {_source_value(statement.model)}{on}"
    if isinstance(statement, s.Let):
        value = statement.value
        if isinstance(value, s.Call):
            return f"let {statement.name} = {value.name}(" + ", ".join(_source_value(v) for v in value.args) + ")"
        return f"let {statement.name} = {_source_value(value)}"
    return f"use {statement.path.raw}"


def format_source(text: str, file: str = "<string>") -> str:
    """``text`` laid out canonically, comments kept; idempotent.

    Raises:
        RecipeError: the text has a syntax error (nothing is compiled: unknown ops and
            undefined variables are left for ``lwdsl check``).
    """
    doc = parse_document(text, file)
    lines = text.split("\n")
    blank = {i + 1 for i, line in enumerate(lines) if not line.strip()}
    statement_lines = {st.span.line for st in doc.statements}
    trailing: dict[int, str] = {}  # line -> its end-of-line comment
    items: list[tuple[int, str, bool]] = []  # (line, text, is a step)
    for tok in comments(text):
        if tok.line in statement_lines:
            trailing[tok.line] = tok.value.rstrip()
        else:
            items.append((tok.line, tok.value.rstrip(), False))
    last_on_line = {st.span.line: st for st in doc.statements}
    for st in doc.statements:
        line = _source_statement(st)
        if last_on_line[st.span.line] is st and st.span.line in trailing:
            line += "  " + trailing[st.span.line]
        items.append((st.span.line, line, isinstance(st, s.Step)))
    items.sort(key=lambda item: item[0])
    return _layout(items, blank)


def _layout(items: list[tuple[int, str, bool]], blank: set[int]) -> str:
    """One item a line; one blank line where the source had any between two items, and one
    between the header lines and the first step (with the comments just above it)."""
    out: list[str] = []
    at: list[int] = []  # index in ``out`` of each item
    previous = 0
    for line, text, _ in items:
        if out and any(previous < b < line for b in blank):
            out.append("")
        at.append(len(out))
        out.append(text)
        previous = line
    first = next((i for i, (_, text, is_step) in enumerate(items) if is_step), None)
    has_header = first is not None and any(not t.startswith("#") for _, t, _ in items[:first])
    if has_header:
        while first > 0 and items[first - 1][1].startswith("#") and out[at[first] - 1] != "":
            first -= 1
        if out[at[first] - 1] != "":
            out.insert(at[first], "")
    return "\n".join(out) + "\n" if out else ""
