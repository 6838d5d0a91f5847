"""One step as written -> its validated op spec: the op, positional values, options, selector.

A bare value goes to the first field of the spec's ``positional`` tuple, not yet filled, whose
type accepts it; ``key=value`` fills the field ``key``; a bare bool option name is ``true``;
``on``/``except``/``expect`` build the :class:`~lwdsl.language.specs.Selector`. The spec then validates
itself, and any complaint is located at the argument it is about.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Union

from pydantic import ValidationError

from . import syntax as s
from ..errors import RecipeError, did_you_mean
from .fields import accepts, choices, describe, field, is_flag, join_words, options, problem, type_parts, type_words
from .specs import KINDS, OPS, Glob, Selector, StepSpec
from .specs.base import Refusal
from .values import to_python

__all__ = ["bind_step", "vars_in"]

Written = Union[s.Value, s.Option, s.Clause]


def bind_step(
    step: s.Step,
    doc: s.Document,
    label: str,
    variables: Mapping[str, Any],
    origins: Optional[Mapping[str, tuple[str, str]]] = None,
    written: Optional[dict[str, Any]] = None,
) -> StepSpec:
    """The spec of ``step`` (written in ``doc``), named ``label`` in errors.

    ``origins`` gives each variable's value in recipe syntax and where it comes from
    (``--set amount=3``, ``let amount at FILE:LINE:COL``): an error about an argument written
    with ``$NAME`` shows the value used and where it was set.

    ``written``, when given, receives each field's syntax node (a value, or the ``key=value``
    option that set it): which fields a ``$NAME`` filled.

    Raises:
        RecipeError: an unknown op or option, a value no field takes, or a spec that rejects
            the values, located at the argument at fault.
    """
    binder = _Binder(step, doc, label, variables, origins or {})
    spec = binder.bind()
    if written is not None:
        written.update(binder.origin)
    return spec


class _Binder:
    def __init__(
        self, step: s.Step, doc: s.Document, label: str, variables: Mapping[str, Any], origins: Mapping[str, tuple[str, str]]
    ) -> None:
        self.step, self.doc, self.label, self.variables, self.origins = step, doc, label, variables, origins
        if step.op not in OPS:
            raise self._error(
                f"unknown operation `{step.op}`",
                step.op_span,
                expected=list(OPS),
                suggestion=did_you_mean(step.op, OPS),
            )
        self.spec = OPS[step.op]
        self.fields: dict[str, Any] = {}
        self.origin: dict[str, Written] = {}  # field -> what set it
        self.selector: dict[str, Any] = {}
        self.selector_origin: dict[str, Written] = {}

    def bind(self) -> StepSpec:
        bare: list[s.Value] = []
        for arg in self.step.args:
            if isinstance(arg, s.Option):
                self._option(arg)
            elif isinstance(arg, s.Clause):
                self._clause(arg)
            elif "on" in self.selector_origin or "except" in self.selector_origin:
                raise self._error(
                    "a bare value after the selector",
                    arg.span,
                    expected="`except`, `expect=N` or the end of the step",
                    hint="values and options come before `on`; separate layer kinds with commas: on conv, linear",
                )
            elif isinstance(arg, s.Scalar) and arg.is_word and is_flag(self.spec, arg.value):
                self._set(arg.value, True, arg)
            else:
                bare.append(arg)
        for value in bare:
            self._positional(value)
        data = {"op": self.step.op, **self.fields}
        if self.selector_origin:
            data["selector"] = self._build_selector()
        try:
            spec = self.spec.model_validate(data, strict=True)
        except ValidationError as exc:
            raise self._spec_error(exc.errors()[0]) from None
        nothing = spec.no_op()
        if nothing is not None:
            written = self.origin.get(nothing.field)
            raise self._error(str(nothing), written.span if written else self.step.span, expected=nothing.expected)
        return spec

    # --- arguments ---------------------------------------------------------------------------

    def _option(self, option: s.Option) -> None:
        if option.key == "expect":
            self._set_selector("expect", self._value(option.value), option)
            if option.at_least:
                self.selector["expect_at_least"] = True
            return
        names = options(self.spec)
        if option.at_least:
            raise self._error(
                f"`{option.key}>=` is not an option: only `expect>=N` uses `>=`",
                option.span,
                expected=f"{option.key}=VALUE",
            )
        if option.key not in names:
            raise self._error(
                f"`{self.step.op}` has no option `{option.key}`",
                option.span,
                expected=names + ["expect"],
                suggestion=did_you_mean(option.key, names + ["expect"]),
            )
        self._set(option.key, self._value(option.value), option)

    def _set(self, name: str, value: Any, written: Written) -> None:
        if name in self.fields:
            raise self._twice(name, written, self.origin[name])
        self.fields[name] = value
        self.origin[name] = written

    def _set_selector(self, name: str, value: Any, written: Written) -> None:
        if name in self.selector_origin:
            raise self._twice(name, written, self.selector_origin[name])
        self.selector[name] = value
        self.selector_origin[name] = written

    def _twice(self, name: str, written: Written, first: Written) -> RecipeError:
        where = f"{first.span.line}:{first.span.col}"
        return self._error(
            f"`{name}` is given twice",
            written.span,
            expected=f"`{name}` once (it is already `{self.doc.snippet(first.span)}` at {where})",
        )

    def _clause(self, clause: s.Clause) -> None:
        patterns = tuple(self._pattern(p, clause.keyword) for p in clause.patterns)
        self._set_selector(clause.keyword, patterns, clause)

    def _pattern(self, pattern: s.Scalar, keyword: str) -> Union[str, Glob]:
        if pattern.quoted:
            try:
                return Glob(glob=pattern.value)
            except ValidationError:
                raise self._error("an empty glob", pattern.span, expected='a glob such as "features.*"') from None
        if pattern.value in KINDS:
            return pattern.value
        raise self._error(
            f"`{pattern.raw}` is not a layer kind",
            pattern.span,
            expected=list(KINDS),
            suggestion=did_you_mean(pattern.raw, KINDS),
            hint=f'to match layer names, quote a glob: {keyword} "{pattern.raw}*"',
        )

    def _positional(self, value: s.Value) -> None:
        python = self._value(value)
        free = [name for name in self.spec.positional if name not in self.fields]
        target = next((name for name in free if accepts(self.spec, name, python)), None)
        if target is not None:
            self._set(target, python, value)
            return
        taken = [n for n in self.spec.positional if n in self.fields and accepts(self.spec, n, python)]
        if taken:
            raise self._twice(taken[0], value, self.origin[taken[0]])
        raise self._unexpected(value, python, free)

    def _unexpected(self, value: s.Value, python: Any, free: list[str]) -> RecipeError:
        word = python if isinstance(python, str) else None
        names = options(self.spec)
        hint = f"options are written key=value: {word}=..." if word in names else None
        if not self.spec.positional:
            return self._error(
                f"`{self.step.op}` takes no bare values",
                value.span,
                expected=f"options written key=value: {', '.join(names)}",
                suggestion=did_you_mean(word, names) if word else None,
                hint=hint,
            )
        if not free:
            given = ", ".join(self.spec.positional)
            return self._error(
                f"one value too many for `{self.step.op}`",
                value.span,
                expected=f"options written key=value, or the end of the step ({given} are all given)",
                hint=hint,
            )
        allowed = list(dict.fromkeys(word for name in free for word in type_parts(self.spec, name)))
        words = [c for name in free for c in choices(self.spec, name)]
        return self._error(
            f"`{self.doc.snippet(value.span)}` is not a valid argument of `{self.step.op}` here",
            value.span,
            expected=join_words(allowed),
            suggestion=did_you_mean(word, words + names) if word else None,
            hint=hint,
        )

    def _value(self, value: s.Value) -> Any:
        return to_python(value, self.doc, self.variables, f"{self.label}: ")

    # --- the spec's verdict -------------------------------------------------------------------

    def _build_selector(self) -> Selector:
        data = {"on": self.spec.kinds_by_default(self.fields), **self.selector}
        try:
            return Selector.model_validate(data, strict=True)
        except ValidationError as exc:  # only `expect` can be wrong: kinds and globs are checked
            name, what = problem(Selector, exc.errors()[0])
            written = self.selector_origin.get(name or "", self.step)
            raise self._error(what, written.span, expected=describe(Selector, name) if name else None) from None

    def _spec_error(self, error: dict[str, Any]) -> RecipeError:
        name, what = problem(self.spec, error)
        refusal = (error.get("ctx") or {}).get("error")
        if isinstance(refusal, Refusal):
            name = refusal.field
        if name is None:
            name = _mentioned(self.spec, what, self.origin)
        written = self.origin.get(name or "")
        span = written.span if written else self.step.span
        expected = None
        if isinstance(refusal, Refusal):
            expected = refusal.expected
        elif name:
            description = field(self.spec, name).description
            expected = f"`{name}` = {describe(self.spec, name)}" + (f" ({description})" if description else "")
        written_value = error.get("input")
        suggestion = None
        if error.get("type") == "literal_error" and name and isinstance(written_value, str):  # `precision=bf61`
            suggestion = did_you_mean(written_value, choices(self.spec, name))
        return self._error(what, span, expected=expected, suggestion=suggestion)

    def _error(self, message: str, span: s.Span, **details: Any) -> RecipeError:
        if "found" not in details:
            details.update(self._from_variables(span))
        return self.doc.error(span, f"{self.label}: {message}", **details)

    def _from_variables(self, span: s.Span) -> dict[str, str]:
        """``found`` (the values used) and ``hint`` (where they come from) for an argument at
        ``span`` written with ``$NAME``: its text alone would show ``$NAME``, not the value."""
        node = next((a for a in self.step.args if a.span == span or getattr(getattr(a, "value", None), "span", None) == span), None)
        names = list(dict.fromkeys(v.name for v in vars_in(node) if v.name in self.origins)) if node is not None else []
        if not names:
            return {}
        values = ", ".join(f"${name} = {self.origins[name][0]}" for name in names)
        origins = "; ".join(f"${name} comes from {self.origins[name][1]}" for name in names)
        return {"found": f"{self.doc.snippet(span)}, with {values}", "hint": origins}


def vars_in(*nodes: Any) -> list[s.Var]:
    """The ``$NAME`` uses among syntax nodes (arguments, options' values, lists searched)."""
    found, stack = [], list(nodes)
    while stack:
        item = stack.pop()
        if isinstance(item, s.Var):
            found.append(item)
        elif isinstance(item, s.Option):
            stack.append(item.value)
        elif isinstance(item, s.ListValue):
            stack.extend(item.items)
    return found


def _mentioned(spec: type[StepSpec], message: str, written: Mapping[str, Written]) -> Optional[str]:
    """The field a validator's sentence is about: the first one it names that was written,
    else the first it names (``AMOUNT`` names ``amount``)."""
    found = []
    for name in options(spec):
        hit = re.search(rf"\b(?:{re.escape(name)}|{re.escape(name.upper())})\b", message)
        if hit:
            found.append((hit.start(), name))
    found.sort()
    for _, name in found:
        if name in written:
            return name
    return found[0][1] if found else None
