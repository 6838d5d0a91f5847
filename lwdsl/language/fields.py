"""Spec fields in human words: types, choices, ranges and defaults, and Pydantic errors.

Error messages, ``lwdsl ops`` and ``lwdsl explain`` all describe fields from the specs
themselves (annotations, ``Field`` constraints, descriptions), never from a copy: a new option
documents itself.
"""

from __future__ import annotations

import functools
import re
import types
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from .specs import FeaturePair, Glob, NMRatio, PruneSpec, StepSpec, TrainingOptions

__all__ = [
    "options",
    "applies",
    "field",
    "choices",
    "describe",
    "type_words",
    "type_parts",
    "join_words",
    "range_words",
    "number_text",
    "accepts",
    "is_flag",
    "problem",
]

#: Fields of every spec that are not options a user writes.
_NOT_OPTIONS = ("op", "selector")

_SCALAR_WORDS: dict[Any, str] = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: 'a word or "string"',
    NMRatio: "an N:M ratio such as 2:4",
    FeaturePair: "a pair teacher_layer->student_layer",
    Glob: 'a "glob" of layer names',
}
_ITEM_WORDS: dict[Any, str] = {str: 'words or "strings"', FeaturePair: "pairs teacher_layer->student_layer"}


def options(spec: type[BaseModel]) -> list[str]:
    """The option names of ``spec`` in field order (``op`` and ``selector`` excluded)."""
    return [name for name in spec.model_fields if name not in _NOT_OPTIONS]


def field(spec: type[BaseModel], name: str) -> FieldInfo:
    return spec.model_fields[name]


def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a Union/Optional (the annotation itself otherwise)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(m for arg in get_args(annotation) for m in _members(arg))
    if get_origin(annotation) is Annotated:  # a constrained alternative: Annotated[float, Field(ge=0)]
        return _members(get_args(annotation)[0])
    return (annotation,)


def _alternative_bounds(annotation: Any) -> tuple[tuple[Any, list[Any]], ...]:
    """(type, its constraints) of each constrained alternative of a union
    (``Union[Annotated[float, Field(ge=0)], Literal["auto"]]``: float, [Ge(0)])."""
    found = []
    for arg in get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ():
        if get_origin(arg) is Annotated:
            found.append((get_args(arg)[0], [m for extra in arg.__metadata__ for m in getattr(extra, "metadata", [extra])]))
        elif get_origin(arg) in (Union, types.UnionType):
            found.extend(_alternative_bounds(arg))
    return tuple(found)


def choices(spec: type[BaseModel], name: str) -> tuple[str, ...]:
    """The words a Literal field (or a Literal alternative of it) allows, in order."""
    return tuple(
        str(value)
        for member in _members(field(spec, name).annotation)
        if get_origin(member) is Literal
        for value in get_args(member)
    )


def join_words(parts: list[str]) -> str:
    """``a``, ``a or b``, ``a, b, or c``."""
    if len(parts) < 3:
        return " or ".join(parts)
    return ", ".join(parts[:-1]) + f", or {parts[-1]}"


def _type_parts(annotation: Any) -> list[str]:
    parts: list[str] = []
    for member in _members(annotation):
        origin = get_origin(member)
        if member is type(None):
            continue
        if origin is Literal:
            parts += [str(v) for v in get_args(member)]
        elif origin is tuple:
            item = get_args(member)[0]
            parts.append(f"a list [...] of {_ITEM_WORDS.get(item) or join_words(_type_parts(item))}")
        else:
            parts.append(_SCALAR_WORDS.get(member, getattr(member, "__name__", str(member))))
    return parts


def type_parts(spec: type[BaseModel], name: str) -> list[str]:
    """The alternatives a field takes, each in words: ``['auto', 'a number']``."""
    return _type_parts(field(spec, name).annotation)


def type_words(spec: type[BaseModel], name: str) -> str:
    """``'l1, l2, ln, random, or threshold'``, ``'a number'``, ``'true or false'``..."""
    return join_words(_type_parts(field(spec, name).annotation))


def number_text(value: float) -> str:
    """A number as a user would write it: ``1`` not ``1.0``, ``0.0001`` not ``1e-04``."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def range_words(spec: type[BaseModel], name: str) -> str:
    """The field's bounds in words (``'from 1 to 10000'``, ``'> 0 and <= 100'``), or ``''``;
    for a union, those of its constrained alternative."""
    info = field(spec, name)
    return _bounds_words(list(info.metadata) + [m for _, ms in _alternative_bounds(info.annotation) for m in ms])


def _bounds_words(metadata: list[Any]) -> str:
    bounds = {}
    for item in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, getattr(at, attr.capitalize())):
                bounds[sign] = number_text(getattr(item, attr))
        if isinstance(item, at.MinLen) and item.min_length:
            bounds["non-empty"] = ""
    if ">=" in bounds and "<=" in bounds and len(bounds) == 2:
        return f"from {bounds['>=']} to {bounds['<=']}"
    return " and ".join(f"{sign} {value}".strip() for sign, value in bounds.items())


def describe(spec: type[BaseModel], name: str) -> str:
    """Type and range together: ``'a number > 0 and <= 100'``; a union with a constrained
    alternative says its range beside it: ``'a number >= 0 or auto'``."""
    info = field(spec, name)
    alternatives = _alternative_bounds(info.annotation)
    if not alternatives:
        return " ".join(part for part in (type_words(spec, name), range_words(spec, name)) if part)
    parts = []
    for member in _members(info.annotation):
        if member is type(None):
            continue
        words = _type_parts(member)
        ranged = next((_bounds_words(ms) for kind, ms in alternatives if kind is member), "")
        parts += [f"{w} {ranged}".strip() for w in words]
    return " ".join(part for part in (join_words(parts), _bounds_words(list(info.metadata))) if part)


@functools.cache
def _adapter(spec: type[BaseModel], name: str) -> TypeAdapter:
    return TypeAdapter(field(spec, name).annotation)


def accepts(spec: type[BaseModel], name: str, value: Any) -> bool:
    """Whether ``value`` has the field's type (strictly; ranges are the spec's to check)."""
    try:
        _adapter(spec, name).validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


def is_flag(spec: type[BaseModel], name: str) -> bool:
    """True for bool options, which may be written bare (``weights_only``)."""
    return name in spec.model_fields and field(spec, name).annotation is bool


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


def problem(spec: type[BaseModel], error: dict[str, Any]) -> tuple[Optional[str], str]:
    """(field or None, what is wrong in words) for one error of ``ValidationError.errors()``.

    The field is None for errors of the whole spec (its own validators), whose message is the
    validator's sentence without Pydantic's prefix.
    """
    loc = error.get("loc", ())
    name = loc[0] if loc and isinstance(loc[0], str) and loc[0] in spec.model_fields else None
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "value_error" and "error" in ctx:
        return name, str(ctx["error"])
    if name is None:
        return None, str(error.get("msg", "invalid"))
    if kind in _RANGE_ERRORS:
        return name, f"`{name}` is out of range"
    if kind == "missing":
        return name, f"`{name}` is missing"
    if kind == "string_too_short":
        return name, f"`{name}` cannot be empty"
    return name, f"`{name}` must be {describe(spec, name)}"


_MODE_PREFIX = re.compile(r"^([a-z0-9_]+(?:/[a-z0-9_]+)*): ")

#: Fields that apply only when another field has a value, beyond the description prefixes.
_ONLY_WHEN: dict[type[StepSpec], dict[str, tuple[str, str]]] = {
    PruneSpec: {name: ("schedule", "gradual") for name in TrainingOptions.model_fields},
}


def applies(step: StepSpec, name: str) -> bool:
    """Whether option ``name`` matters for ``step`` as written: written, or a default that the
    step's other values use (``lwdsl explain`` and ``run --verbose`` show only these). A field
    whose description starts with other fields' values (``gradual: ...``, ``static/qat: ...``)
    applies when one of those values is chosen; unset empty fields never do."""
    spec = type(step)
    if name in step.model_fields_set:
        return True
    if getattr(step, name) is None:
        return False
    condition = _ONLY_WHEN.get(spec, {}).get(name)
    if condition and getattr(step, condition[0]) != condition[1]:
        return False
    prefix = _MODE_PREFIX.match(spec.model_fields[name].description or "")
    modes = set(prefix[1].split("/")) if prefix else set()
    if not modes or modes <= set(choices(spec, name)):  # no mode, or it explains its own values
        return True
    chosen = {str(getattr(step, f)) for f in options(spec) if choices(spec, f)}
    return bool(modes & chosen)
