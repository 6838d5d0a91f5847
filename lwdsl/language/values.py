"""Values as written -> Python values a spec field takes, with ``$NAME`` variables resolved.

Numbers stay numbers (``20%`` is already 0.2), words and strings become ``str``, lists become
tuples, ``2:4`` an :class:`~lwdsl.language.specs.NMRatio` and ``a->b`` a
:class:`~lwdsl.language.specs.FeaturePair`. Whatever cannot be built is a located RecipeError.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from pydantic import ValidationError

from . import syntax as s
from ..errors import RecipeError, did_you_mean
from .fields import problem
from .specs import FeaturePair, NMRatio

__all__ = ["to_python", "undefined_variable"]


def to_python(value: s.Value, doc: s.Document, variables: Mapping[str, Any], label: str = "") -> Any:
    """The Python value of ``value`` (written in ``doc``), looking ``$NAME`` up in ``variables``.

    ``label`` (``"step 2 `...`: "``) starts the messages of errors.

    Raises:
        RecipeError: an undefined variable, a number too large, a bad N:M ratio or pair.
    """
    if isinstance(value, s.Scalar):
        if isinstance(value.value, float) and not math.isfinite(value.value):
            raise doc.error(value.span, f"{label}the number {value.raw} is too large", expected="a finite number")
        return value.value
    if isinstance(value, s.Var):
        if value.name not in variables:
            raise undefined_variable(value.name, variables, doc.location(value.span), label)
        return variables[value.name]
    if isinstance(value, s.ListValue):
        return tuple(to_python(item, doc, variables, label) for item in value.items)
    if isinstance(value, s.Ratio):
        data, model, expected = {"n": value.n, "m": value.m}, NMRatio, "N:M with 1 <= N < M <= 64, e.g. 2:4"
    else:
        data = {"teacher": value.teacher.value, "student": value.student.value}
        model, expected = FeaturePair, "teacher_layer->student_layer, both non-empty"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        _, what = problem(model, exc.errors()[0])
        raise doc.error(value.span, f"{label}{what}", expected=expected) from None


def undefined_variable(name: str, variables: Mapping[str, Any], location, label: str = "") -> RecipeError:
    """The error for ``$name`` when no ``let`` before it defines it."""
    defined = sorted(variables)
    near = did_you_mean(name, defined)
    return RecipeError(
        f"{label}variable `{name}` is not defined",
        location,
        found=f"${name}",
        expected=", ".join(f"${v}" for v in defined) if defined else "a variable defined by `let NAME = VALUE`",
        suggestion=f"${near}" if near else None,
        hint=None if near else f"define it before the steps: let {name} = VALUE",
    )
