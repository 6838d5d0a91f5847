"""The typed plan a recipe compiles to: header plus a tuple of validated steps.

A :class:`Recipe` is framework-free and immutable. ``to_text`` writes it in the canonical
layout (``parse(r.to_text()) == r``); ``to_json``/``from_json`` round-trip it through the JSON
Schema that ``lwdsl schema`` prints. Source positions of the steps are kept beside the plan
(``locations``) for error messages, and take no part in equality.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ..errors import Location
from .space import SearchVar
from .specs import Step

__all__ = ["Target", "Recipe", "LANGUAGE_VERSION"]

#: The newest language version this lwdsl reads (the ``lwdsl N`` header).
LANGUAGE_VERSION = 1


def unsupported_version(number: int) -> Optional[dict[str, Any]]:
    """The error's words (message, expected, hint) for a language version this lwdsl does not
    read, or None: the one rule for ``lwdsl N`` lines and ``"version"`` in JSON plans."""
    if 1 <= number <= LANGUAGE_VERSION:
        return None
    return {
        "message": f"this recipe is written in lwdsl language version {number}, "
        f"but this lwdsl reads versions 1 to {LANGUAGE_VERSION}",
        "expected": f"lwdsl {LANGUAGE_VERSION} (or no version line)",
        "hint": "upgrade lwdsl: pip install -U lwdsl" if number > LANGUAGE_VERSION else None,
    }

Scalar = Union[bool, int, float, str]


class Target(BaseModel):
    """The default model and data of a recipe (``target lenet5 on mnist``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    data: Optional[str] = None



def _no_reader(text: str) -> "Recipe":
    raise RuntimeError("lwdsl.language.jsonplan is not imported: use lwdsl.Recipe, or import lwdsl.language.compiler first")


#: The JSON reader ``Recipe.from_json`` calls (:func:`lwdsl.language.jsonplan.recipe_from_json`,
#: registered by that module: the plan does not import a later layer).
JSON_READER: list[Callable[[str], "Recipe"]] = [_no_reader]

class Recipe(BaseModel):
    """A whole recipe: optional header and the steps in order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(default=LANGUAGE_VERSION, ge=1)
    name: Optional[str] = None
    target: Optional[Target] = None
    variables: dict[str, Any] = Field(default_factory=dict, description="let NAME = VALUE, as resolved")
    space: dict[str, SearchVar] = Field(
        default_factory=dict,
        description="search variables (let NAME = choice(...) or range(...)) with no value yet; "
        "the steps are bound with the first value of each. A recipe with a space is searched "
        "(lwdsl search), not run",
    )
    steps: tuple[Step, ...] = ()

    _locations: tuple[Location, ...] = PrivateAttr(default=())
    _source: str = PrivateAttr(default="")
    _texts: tuple[str, ...] = PrivateAttr(default=())
    _space_uses: tuple[dict[str, str], ...] = PrivateAttr(default=())

    def __eq__(self, other: object) -> bool:  # positions and source text are not part of the plan
        return isinstance(other, Recipe) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    def location(self, index: int) -> Optional[Location]:
        """Where step ``index`` was written, if the recipe came from text."""
        return self._locations[index] if index < len(self._locations) else None

    @property
    def source(self) -> str:
        """The recipe text as written (empty when built in Python or from JSON)."""
        return self._source

    def text_of(self, index: int) -> Optional[str]:
        """Step ``index`` as written, with the values its ``$NAME`` variables had (``--set``
        included), if the recipe came from text: how reports and errors name the step."""
        return self._texts[index] if index < len(self._texts) else None

    def with_source(self, source: str, locations: tuple[Location, ...], texts: tuple[str, ...] = ()) -> "Recipe":
        self._source = source
        self._locations = locations
        self._texts = texts
        return self

    def space_words(self) -> str:
        """The search variables, as written: ``s = choice(70%, 80%), lr = range(0.001, 0.1, log)``."""
        return ", ".join(f"{name} = {var.text()}" for name, var in self.space.items())

    def with_space_uses(self, uses: tuple[dict[str, str], ...]) -> "Recipe":
        """Record, per step, the fields a search variable fills (``{field: NAME}``): ``to_text``
        writes them as ``$NAME``, so that the space's text compiles to this plan again."""
        self._space_uses = uses
        return self

    def space_uses(self, index: int) -> dict[str, str]:
        """The fields of step ``index`` that a search variable fills (``{field: NAME}``)."""
        return self._space_uses[index] if index < len(self._space_uses) else {}

    def to_text(self) -> str:
        """The recipe in canonical layout; parsing it gives an equal recipe."""
        # layering: the formatter is a later layer than the plan (it formats plans); lazy here
        from .formatter import recipe_to_text

        return recipe_to_text(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The plan as JSON (only what was written or differs from the defaults)."""
        return json.dumps(self.model_dump(mode="json", exclude_unset=True, by_alias=True), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        """The recipe ``to_json`` wrote; a RecipeError (with the JSON path) when it is wrong.
        Reading JSON validates, a later layer than the plan: :mod:`lwdsl.language.jsonplan` registers
        its reader here when it is imported (``import lwdsl`` imports it)."""
        return JSON_READER[0](text)
