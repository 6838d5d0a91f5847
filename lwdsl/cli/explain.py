"""A recipe in plain words: every step with all its settings, defaults included, and meanings.

Each setting is shown with its value, ``(default)`` when it was not written, and the spec's
own description of it. Settings that cannot matter for the step as written are left out: a
field whose description starts with another field's value (``gradual: ...``,
``static/qat: ...``) shows only when that value is chosen, and unset empty fields are not
shown. Given the model's layers,
each step also lists the layers its selector matches, with their parameter counts.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from ..language.fields import applies, options
from ..language.formatter import selector_to_text, step_to_text, value_to_text
from ..language.plan import Recipe
from ..backend.removal import plan_removals
from ..language.selectors import match_layers
from ..language.specs import StepSpec
from ..language.validate import step_label

if TYPE_CHECKING:
    from ..backend import LayerInfo

__all__ = ["explain_recipe"]

def _explain_step(step: StepSpec) -> list[str]:
    spec = type(step)
    lines = [f"   {spec.summary}"] if spec.summary else []
    rows = []
    for name in list(spec.positional) + [n for n in options(spec) if n not in spec.positional]:
        if not applies(step, name):
            continue
        value = value_to_text(getattr(step, name))
        default = "" if name in step.model_fields_set else " (default)"
        rows.append((f"{name} = {value}{default}", spec.model_fields[name].description or ""))
    selector = step.effective_selector()
    where = "written" if step.selector is not None else f"the default of {step.op}"
    rows.append((f"layers: {selector_to_text(selector)}", where))
    width = max(len(left) for left, _ in rows)
    for left, right in rows:
        lines += _row(left, right, width)
    return lines


#: Columns explain's output fits in (meanings wrap at word boundaries).
WIDTH = 80


def _row(left: str, right: str, width: int) -> list[str]:
    """``left`` padded to ``width`` and ``right`` wrapped beside it, within WIDTH columns (on
    the next lines when too little room is left beside it)."""
    indent = 3 + width + 2
    if not right:
        return [f"   {left}"]
    if WIDTH - indent < 30:
        return [f"   {left}"] + textwrap.wrap(right, WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6, break_on_hyphens=False)
    wrapped = textwrap.wrap(right, WIDTH - indent, break_on_hyphens=False) or [""]
    return [f"   {left:<{width}}  {wrapped[0]}"] + [" " * indent + more for more in wrapped[1:]]


def _explain_layers(recipe: Recipe, index: int, layers: Sequence["LayerInfo"]) -> list[str]:
    step = recipe.steps[index]
    label = step_label(recipe, index)
    names = match_layers(step.effective_selector(), layers, step_label=label, location=recipe.location(index))
    picked = [layer for layer in layers if layer.name in set(names)]
    total = sum(layer.params for layer in picked)
    lines = [f"   matches {len(picked)} layer{'s' if len(picked) != 1 else ''}, {total:,} parameters:"]
    width = max(len(layer.name) for layer in picked)
    for layer in picked:
        shape = "x".join(map(str, layer.shape))
        lines.append(f"     {layer.name:<{width}}  {layer.kind:<9} {shape:<14} {layer.params:>12,}")
    return lines


def _explain_groups(verdict: Any) -> list[str]:
    """For ``prune ... structured=filters remove=true``: the dependency groups the step
    removes channels from and how many each keeps, or why it is refused (the verdict
    :func:`lwdsl.backend.removal.plan_removals` gives, which ``run`` checks before training)."""
    from ..semantics.groups import describe

    if verdict.error is not None:
        return textwrap.wrap(f"refused: {verdict.error.message}", WIDTH, initial_indent="   ", subsequent_indent="     ")
    chosen = [g for g, _, _ in verdict.groups]
    lines = [f"   removes channels of {len(chosen)} dependency group{'s' if len(chosen) != 1 else ''}:"]
    for line in describe(chosen):
        lines += textwrap.wrap(line, WIDTH, initial_indent="     ", subsequent_indent="       ", break_on_hyphens=False)
    kept = ", ".join(f"{g.name} {now}->{left}" for g, now, left in verdict.groups)
    lines += textwrap.wrap(f"channels kept: {kept}", WIDTH, initial_indent="     ", subsequent_indent="       ", break_on_hyphens=False)
    return lines


def explain_recipe(
    recipe: Recipe, layers: Optional[Sequence["LayerInfo"]] = None, groups: Optional[Sequence[Any]] = None,
    highlight: Optional[Callable[[str], str]] = None,
) -> str:
    """The plan of ``recipe`` in words, step by step.

    Args:
        recipe: a compiled recipe.
        layers: the model's layers (``backend.layers(model)``); when given, each step also
            lists the layers it matches with their parameter counts.
        groups: the model's dependency groups (``backend.groups(model)``); with ``layers``, a
            ``prune ... remove=true`` step also lists the groups it removes channels from, or
            why it is refused.
        highlight: colours recipe text (each step, each variable's value): the CLI gives one
            on a terminal (:func:`lwdsl.cli.colour.recipe_highlighter`).

    Raises:
        RecipeError: with ``layers``, a selector that matches no layer (or contradicts
            ``expect``).

    Example:
        >>> from lwdsl import parse
        >>> print(explain_recipe(parse("quantize int8 on linear")).splitlines()[2])
        1. quantize int8 on linear
    """
    hl = highlight or (lambda text: text)
    lines = []
    if recipe.name:
        lines.append(f'recipe "{recipe.name}"')
    if recipe.target:
        data = f" on {recipe.target.data}" if recipe.target.data else ""
        lines.append(f"target: model {recipe.target.model}{data}")
    for name, value in recipe.variables.items():
        if name in recipe.space:
            var = recipe.space[name]
            lines.append(f"variable {name} = {hl(var.text())} (searched: `lwdsl search` picks it)")
        else:
            lines.append(f"variable {name} = {hl(value_to_text(value))}")
    count = len(recipe.steps)
    lines.append(f"{count} step{'s' if count != 1 else ''}, run in order:")
    removals = {}
    if layers is not None and groups is not None:
        removals = {v.index: v for v in plan_removals(recipe, layers, groups)}
    for i, step in enumerate(recipe.steps):
        lines += ["", f"{i + 1}. {hl(step_to_text(step, recipe.space_uses(i)))}"] + _explain_step(step)
        if layers is not None:
            lines += _explain_layers(recipe, i, layers)
            if i in removals:
                lines += _explain_groups(removals[i])
    return "\n".join(lines)
