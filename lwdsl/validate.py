"""Checks that look at several steps at once, or at the recipe and a backend together.

Each op spec checks itself; what only shows across steps is checked here:

- ``export`` steps end the recipe (several exports may follow each other);
- a layer is quantized once: two ``quantize`` steps must have disjoint selectors (that is
  how mixed precision is written: ``quantize int8 on conv | quantize int4 on linear``);
- ``prune``, ``regularize`` and ``finetune`` do not follow a ``quantize`` that is not
  ``mode=qat`` (they change float weights the quantize has already turned into integers).

Selectors are compared by kind and by identical glob, without a model; ``all`` overlaps
everything. :func:`check_backend` adds what one backend cannot do, before anything runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from .errors import LwdslError, RecipeError
from .fields import join_words
from .specs import FORMAT_BACKENDS, ExportSpec, Glob, QuantizeSpec, Selector, StepSpec

if TYPE_CHECKING:
    from .backend import Backend
    from .plan import Recipe

__all__ = ["validate_recipe", "check_backend", "step_label", "overlap"]

#: Ops that change float weights in place: they cannot follow a dynamic or static quantize.
#: (``distill`` may: its student is trained as it is, or is a new model given by ``student=``.)
_CHANGE_WEIGHTS = ("prune", "regularize", "finetune")

#: Every kind a layer can have (``all`` covers these and layers of no portable kind).
_EVERY_KIND = frozenset({"conv", "linear", "embedding", "norm", "other"})


def step_text(recipe: "Recipe", index: int) -> str:
    """Step ``index`` as written in the recipe (canonical text when it came from JSON/Python)."""
    loc = recipe.location(index)
    if loc is not None and loc.source_line:
        return " ".join(loc.source_line[loc.col - 1 : loc.col - 1 + loc.width].split())
    from .formatter import step_to_text

    return step_to_text(recipe.steps[index])


def step_label(recipe: "Recipe", index: int) -> str:
    """How errors name step ``index``: ``step 2 `quantize int8``` (as written, when known)."""
    return f"step {index + 1} `{step_text(recipe, index)}`"


def _coverage(selector: Selector) -> tuple[frozenset[str], frozenset[str], bool]:
    """(kinds, globs, covers all) of a selector."""
    kinds: set[str] = set()
    for pattern in selector.on:
        if not isinstance(pattern, Glob):
            kinds |= _EVERY_KIND if pattern == "all" else {pattern}
    kinds -= {p for p in selector.except_ if not isinstance(p, Glob)}
    globs = frozenset(p.glob for p in selector.on if isinstance(p, Glob))
    return frozenset(kinds), globs, "all" in selector.on


def overlap(a: StepSpec, b: StepSpec) -> bool:
    """Whether two steps' selectors may cover a common layer (judged without a model)."""
    kinds_a, globs_a, all_a = _coverage(a.effective_selector())
    kinds_b, globs_b, all_b = _coverage(b.effective_selector())
    return bool(kinds_a & kinds_b or globs_a & globs_b or (all_a and globs_b) or (all_b and globs_a))


def validate_recipe(recipe: "Recipe") -> None:
    """Raise a RecipeError, naming and locating the later step, if the steps do not fit together."""
    quantized: list[tuple[int, QuantizeSpec]] = []
    first_export: Optional[int] = None
    for i, step in enumerate(recipe.steps):
        label, location = step_label(recipe, i), recipe.location(i)
        if first_export is not None and not isinstance(step, ExportSpec):
            raise RecipeError(
                f"{label}: comes after an export",
                location,
                found=step_label(recipe, first_export),
                expected="export steps at the end of the recipe (several exports may end it)",
                hint="move the export to the end",
            )
        if isinstance(step, ExportSpec):
            first_export = i if first_export is None else first_export
        elif isinstance(step, QuantizeSpec):
            for j, earlier in quantized:
                if overlap(step, earlier):
                    raise RecipeError(
                        f"{label}: quantizes layers that {step_label(recipe, j)} already quantized",
                        location,
                        found=step_label(recipe, j),
                        expected="one quantize per layer: disjoint selectors for mixed precision",
                        hint="e.g. quantize int8 on conv | quantize int4 on linear",
                    )
            quantized.append((i, step))
        elif step.op in _CHANGE_WEIGHTS:
            frozen = [(j, q) for j, q in quantized if q.mode != "qat"]
            if frozen:
                j, earlier = frozen[0]
                raise RecipeError(
                    f"{label}: `{step.op}` changes weights that {step_label(recipe, j)} "
                    f"already quantized (mode={earlier.mode})",
                    location,
                    found=step_label(recipe, j),
                    expected=f"`{step.op}` before the quantize, or quantize with mode=qat",
                )


def check_backend(recipe: "Recipe", backend: Union[str, "Backend"], *, load: bool = True) -> None:
    """Raise a RecipeError for the first step that ``backend`` cannot run.

    Export formats of the built-in backends are checked from
    :data:`~lwdsl.specs.FORMAT_BACKENDS`, and every step against the built-in backend's static
    support table (:func:`lwdsl.backend.support_table`), without importing any framework. A
    backend object, or a third-party backend name (with ``load``), is asked itself.

    Args:
        recipe: a compiled recipe.
        backend: a backend name (``torch``, ``tensorflow``, an alias, a plugin) or object.
        load: whether a backend given by name may be imported to ask it.

    Raises:
        RecipeError: a step the backend cannot run, named and located.
        LwdslError: an unknown backend name.

    Example:
        >>> from lwdsl import parse
        >>> check_backend(parse("prune l1 0.2 | export torch"), "torch", load=False)
    """
    from .backend import ALIASES, BACKENDS, get_backend

    name = backend if isinstance(backend, str) else backend.name
    key = ALIASES.get(name, name)
    for i, step in enumerate(recipe.steps):
        if isinstance(step, ExportSpec) and key in BACKENDS and key not in FORMAT_BACKENDS[step.format]:
            writes = [fmt for fmt, names in FORMAT_BACKENDS.items() if key in names]
            other = FORMAT_BACKENDS[step.format][0]
            raise RecipeError(
                f"{step_label(recipe, i)}: the {key} backend cannot export {step.format}",
                recipe.location(i),
                found=step.format,
                expected=f"{join_words(writes)} (what the {key} backend exports)",
                hint=f"export {step.format} with --backend {other}, or export {writes[0]} here",
            )
    from .backend import support_table

    instance = backend if not isinstance(backend, str) else (support_table(key) if key in BACKENDS else None)
    if instance is None and (load or key not in BACKENDS):
        try:
            instance = get_backend(key)
        except LwdslError:
            if key not in BACKENDS:
                raise
    for i, step in enumerate(recipe.steps if instance else ()):
        why = instance.unsupported(step)
        if why:
            raise RecipeError(
                f"{step_label(recipe, i)}: the {key} backend cannot run this step: {why}",
                recipe.location(i),
                found=step.op,
                expected=f"steps the {key} backend supports (see `lwdsl ops`)",
            )
