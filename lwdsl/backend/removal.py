"""What structured removal (``prune ... structured=filters remove=true``) will do, known from
the model's graph alone, before any training.

The runner checks it before the baseline trains (:func:`check_removals`) and ``lwdsl explain
--model`` shows it (:func:`plan_removals`), so both give the same verdict. For each removal
step, in order:

- the dependency groups its selection prunes, or why it is refused
  (:func:`lwdsl.semantics.groups.select_groups`: a group that touches the model's input or
  output, an operation that needs all channels, a coupled layer left out of the selection);
- how many channels each group keeps: AMOUNT prunes ``round_half_even(AMOUNT * channels)`` of a
  group's channels whatever the weights are, so an AMOUNT that removes all of them is known now.
  Earlier removal steps shrink the groups later ones see.

Steps after one that puts another model in place (``distill student=``) are not planned here:
their groups are those of a model that does not exist yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..errors import LwdslError, RecipeError
from ..language.plan import Recipe

__all__ = ["Removal", "needs_groups", "plan_removals", "check_removals"]


@dataclass
class Removal:
    """One removal step's verdict: the groups it prunes with their channels before and after,
    or the error that refuses it."""

    index: int
    groups: list[tuple[Any, int, int]] = field(default_factory=list)  # (Group, channels, kept)
    error: Optional[LwdslError] = None


def _removes(step: Any) -> bool:
    return getattr(step, "op", None) == "prune" and bool(getattr(step, "remove", False))


def needs_groups(recipe: Recipe) -> bool:
    """Whether any step of ``recipe`` removes filters (and so needs the model's groups)."""
    return any(_removes(step) for step in recipe.steps)


def plan_removals(recipe: Recipe, layers: Sequence[Any], groups: Sequence[Any]) -> list[Removal]:
    """The verdict of every removal step of ``recipe`` on a model with ``layers`` and
    dependency ``groups`` (``backend.groups(model)``), in order. Never raises for a refusal:
    each refused step carries its error (a selector that matches nothing still raises, as in
    :func:`lwdsl.language.selectors.match_layers`)."""
    from ..language.selectors import match_layers
    from ..semantics.groups import select_groups
    from ..semantics.masks import count_to_prune
    from ..language.validate import step_label

    channels = {g.name: g.channels for g in groups}
    verdicts = []
    for i, step in enumerate(recipe.steps):
        if getattr(step, "student", None):
            break  # another model from here on
        if not _removes(step):
            continue
        names = match_layers(step.effective_selector(), layers, step_label=step_label(recipe, i), location=recipe.location(i))
        verdict = Removal(i)
        try:
            for g in select_groups(groups, names):
                now = channels.get(g.name, g.channels)
                gone = count_to_prune(float(step.amount), now)
                if gone >= now:
                    keeps = 100 * (now - 1) / now if now > 1 else 0.0
                    raise LwdslError(  # worded as the backends' own refusal after training was
                        f"cannot remove filters of layer '{g.name}': AMOUNT {100 * float(step.amount):g}% removes all {now} of its filters",
                        hint=f"prune a smaller fraction (at most {keeps:.4g}% keeps a filter of this group)"
                        if now > 1
                        else "leave the layer out of the selector: a group of one filter cannot lose it",
                    )
                verdict.groups.append((g, now, now - gone))
        except LwdslError as err:
            verdict.groups, verdict.error = [], err
        else:
            for g, _, kept in verdict.groups:
                channels[g.name] = kept
        verdicts.append(verdict)
    return verdicts


def check_removals(recipe: Recipe, backend: Any, handle: Any) -> None:
    """Refuse, before any training, a removal step the model's graph already rules out.

    Raises:
        RecipeError: naming the step (where it is written), the layer and why.
    """
    if not needs_groups(recipe):
        return
    from ..language.validate import step_label

    for verdict in plan_removals(recipe, backend.layers(handle), backend.groups(handle)):
        if verdict.error is not None:
            err = verdict.error
            raise RecipeError(f"{step_label(recipe, verdict.index)}: {err.message}", recipe.location(verdict.index), hint=err.hint)
