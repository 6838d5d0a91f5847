"""Hypothesis strategies for valid plans, built from the op specs themselves.

Every field gets values from its annotation and ``Field`` bounds, so a new option is covered
without touching this file. Combinations a spec's own validators reject are filtered out.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from hypothesis import assume
from hypothesis import strategies as st
from pydantic import ValidationError

from lwdsl.errors import RecipeError
from lwdsl.language.fields import options
from lwdsl.language.plan import Recipe, Target
from lwdsl.language.specs import KINDS, OPS, FeaturePair, Glob, NMRatio, Selector
from lwdsl.language.validate import validate_recipe

#: Any text but surrogates (which UTF-8 files cannot hold).
text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10)
words = st.from_regex(r"[a-z_][a-z0-9_.]{0,6}", fullmatch=True)
names = st.one_of(words, text)
ratios = st.integers(2, 64).flatmap(lambda m: st.builds(NMRatio, n=st.integers(1, m - 1), m=st.just(m)))


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(at, attr.capitalize())):
                found[attr] = getattr(item, attr)
    return found


def for_annotation(annotation: Any, metadata: list[Any] = ()) -> st.SearchStrategy:
    """Values of ``annotation`` within the bounds in ``metadata``."""
    origin = get_origin(annotation)
    if origin is Annotated:  # a constrained alternative of a union: Annotated[float, Field(ge=0)]
        inner = [m for extra in annotation.__metadata__ for m in getattr(extra, "metadata", [extra])]
        return for_annotation(get_args(annotation)[0], list(metadata) + inner)
    if origin in (Union, types.UnionType):
        return st.one_of([for_annotation(member, metadata) for member in get_args(annotation)])
    if annotation is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if origin is tuple:
        return st.lists(for_annotation(get_args(annotation)[0]), max_size=3).map(tuple)
    b = _bounds(list(metadata))
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        low = b.get("ge", b.get("gt", -1 - 10**6) + 1)
        high = b.get("le", b.get("lt", 10**6 + 1) - 1)
        return st.integers(low, high)
    if annotation is float:
        return st.floats(
            min_value=b.get("ge", b.get("gt", -1e6)),
            max_value=b.get("le", b.get("lt", 1e6)),
            exclude_min="gt" in b,
            exclude_max="lt" in b,
            allow_nan=False,
            allow_infinity=False,
        )
    if annotation is str:
        return names
    if annotation is NMRatio:
        return ratios
    if annotation is FeaturePair:
        return st.builds(FeaturePair, teacher=names, student=names)
    raise NotImplementedError(annotation)


patterns = st.one_of(st.sampled_from(KINDS), st.builds(Glob, glob=names))


@st.composite
def selectors(draw) -> Selector:
    expect = draw(st.none() | st.integers(0, 20))
    data = {
        "on": tuple(draw(st.lists(patterns, min_size=1, max_size=3))),
        "except": tuple(draw(st.lists(patterns, max_size=2))),
        "expect": expect,
        "expect_at_least": expect is not None and draw(st.booleans()),
    }
    return Selector.model_validate(data)


@st.composite
def steps(draw, op: Any = None):
    """A valid step of ``op`` (any op when None) with a random subset of its options."""
    op = op or draw(st.sampled_from(list(OPS)))
    spec = OPS[op]
    required = {n for n in options(spec) if spec.model_fields[n].is_required()}
    fields = spec.model_fields
    strategies = {n: for_annotation(fields[n].annotation, fields[n].metadata) for n in options(spec)}
    data = draw(
        st.fixed_dictionaries(
            {n: s for n, s in strategies.items() if n in required},
            optional={n: s for n, s in strategies.items() if n not in required},
        )
    )
    if draw(st.booleans()):
        data["selector"] = draw(selectors())
    try:
        return spec.model_validate({"op": op, **data})
    except ValidationError:
        assume(False)


variable_values = st.one_of(
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    names,
    ratios,
    st.lists(st.one_of(st.integers(0, 9), words), max_size=3),
)


@st.composite
def recipes(draw) -> Recipe:
    """A valid recipe: optional header, variables, and one to four steps that fit together (a
    recipe with no step is refused: it would do nothing)."""
    fields: dict[str, Any] = {"steps": tuple(draw(st.lists(steps(), min_size=1, max_size=4)))}
    if draw(st.booleans()):
        fields["name"] = draw(text)
    if draw(st.booleans()):
        fields["target"] = Target(model=draw(names), data=draw(st.none() | names))
    if draw(st.booleans()):
        identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True)
        fields["variables"] = draw(st.dictionaries(identifiers, variable_values, max_size=3))
    if draw(st.booleans()):
        fields["version"] = 1
    recipe = Recipe(**fields)
    try:
        validate_recipe(recipe)
    except RecipeError:
        assume(False)
    return recipe
