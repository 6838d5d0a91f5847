"""Recipes given as JSON (as written by ``Recipe.to_json``), with errors as RecipeErrors.

An error names the JSON path (``steps[1].amount``), the bad value and what is allowed, in the
same words as errors in recipe text; the cross-step checks of :mod:`lwdsl.language.validate` apply.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from pydantic import ValidationError

from ..errors import Location, RecipeError, did_you_mean
from .fields import describe, problem
from ..limits import MAX_NESTING
from .parser import check_size
from .plan import JSON_READER, Recipe, unsupported_version
from .specs import OPS, Selector
from .syntax import location_in

__all__ = ["recipe_from_json"]


def recipe_from_json(text: str, file: str = "<json>") -> Recipe:
    """The validated Recipe a JSON text describes.

    Raises:
        RecipeError: the text is not JSON, does not describe a recipe, or its steps do not
            fit together.

    Example:
        >>> recipe_from_json('{"steps": [{"op": "quantize", "dtype": "int8"}]}').steps[0].dtype
        'int8'
    """
    from .validate import validate_recipe

    check_size(text, file)
    try:
        data = json.loads(text)
    except RecursionError:
        raise RecipeError(
            "JSON nested too deeply to read",
            Location(file),
            expected=f"a JSON object as written by Recipe.to_json, with values at most {MAX_NESTING} lists deep",
        ) from None
    except json.JSONDecodeError as exc:
        raise RecipeError(
            f"not valid JSON: {exc.msg}",
            location_in(text, file, exc.lineno, exc.colno),
            found=repr(text[exc.pos : exc.pos + 10]) if exc.pos < len(text) else "the end of the file",
            expected="a JSON object as written by Recipe.to_json (see `lwdsl schema`)",
        ) from None
    deep = _too_deep(data, MAX_NESTING + _PLAN_DEPTH)
    if deep:
        raise RecipeError(
            f"{deep}: nested more than {MAX_NESTING} lists deep",
            Location(file),
            expected=f"values at most {MAX_NESTING} lists deep",
        )
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise _json_error(exc.errors()[0], file) from None
    words = unsupported_version(recipe.version)
    if words:
        found = re.search(r'"version"\s*:\s*', text)
        where = location_in(text, file, *_line_col(text, found.end())) if found else Location(file)
        raise RecipeError(location=where, found=str(recipe.version), **words)
    if not recipe.steps:
        from .validate import no_steps

        raise no_steps(file, text)
    if not file.startswith("<"):  # teacher= paths are relative to the plan's folder, as in a .lw
        folder = os.path.dirname(os.path.abspath(file))
        recipe = recipe.model_copy(update={"steps": tuple(step.paths_from(folder) for step in recipe.steps)})
    validate_recipe(recipe)
    return recipe


#: How deep a plan's own structure goes (recipe -> steps -> step -> selector -> on -> glob).
_PLAN_DEPTH = 6


def _too_deep(data: Any, limit: int) -> str:
    """The JSON path of a value nested deeper than ``limit``, or "" (iterative)."""
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= limit:
                return where or "the recipe"
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                stack.append((child, depth + 1, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)))
    return ""


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, str) and not part.isidentifier():
            continue  # a union member's tag, e.g. "literal['conv','linear']"
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "the recipe"


def _json_error(error: dict[str, Any], file: str) -> RecipeError:
    loc = tuple(error.get("loc", ()))
    found = json.dumps(error.get("input"), default=str)
    found = found if len(found) <= 60 else found[:57] + "..."
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        tag = str((error.get("ctx") or {}).get("tag", ""))
        return RecipeError(
            f"{_path(loc)}: unknown operation `{tag}`" if tag else f"{_path(loc)}: a step needs \"op\"",
            Location(file),
            found=found,
            expected=list(OPS),
            suggestion=did_you_mean(tag, OPS) if tag else None,
        )
    model, inner, shown = Recipe, loc, loc
    if len(loc) >= 3 and loc[0] == "steps" and loc[2] in OPS:
        model, inner, shown = OPS[loc[2]], loc[3:], loc[:2] + loc[3:]
        if inner[:1] == ("selector",):
            model, inner = Selector, inner[1:]
    name, what = problem(model, {**error, "loc": inner})
    return RecipeError(
        f"{_path(shown)}: {what}",
        Location(file),
        found=found,
        expected=describe(model, name) if name else None,
    )


JSON_READER[0] = recipe_from_json  # Recipe.from_json reads through this module
