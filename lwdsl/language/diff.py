"""Semantic difference of two recipes: what a run would do differently, not how it is written.

Steps are compared with every default made explicit and with the selector each step really
uses, so ``prune l1 0.2`` and ``prune layer l1 20%`` are the same step, and layout, comments
and variables make no difference. Steps are aligned like diff(1) aligns lines; a step that
only changed place is *moved*, one whose options changed is *changed* (option by option).
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Literal, Optional

from .formatter import selector_to_text, step_to_text, value_to_text
from .plan import Recipe, Target
from .specs import StepSpec

__all__ = ["Change", "diff_recipes", "render_diff"]


@dataclass(frozen=True)
class Change:
    """One difference. ``old``/``new`` are 1-based step numbers (0 for the header)."""

    kind: Literal["header", "added", "removed", "moved", "changed"]
    old: int
    new: int
    text: str


def _normal(step: StepSpec) -> dict[str, Any]:
    """The step with defaults explicit and its effective selector, patterns sorted."""
    data = step.model_dump(mode="json", exclude={"selector"})
    selector = step.effective_selector()
    data["selector"] = {
        "on": sorted(map(json.dumps, selector.model_dump(mode="json")["on"])),
        "except": sorted(map(json.dumps, selector.model_dump(mode="json", by_alias=True)["except"])),
        "expect": [selector.expect, selector.expect_at_least],
    }
    return data


def _key(step: StepSpec) -> str:
    return json.dumps(_normal(step), sort_keys=True)


def _field_changes(old: StepSpec, new: StepSpec) -> list[str]:
    changes = []
    for name in type(old).model_fields:
        if name in ("op", "selector") or getattr(old, name) == getattr(new, name):
            continue
        changes.append(f"{name}: {value_to_text(getattr(old, name))} -> {value_to_text(getattr(new, name))}")
    if _normal(old)["selector"] != _normal(new)["selector"]:
        before = selector_to_text(old.effective_selector())
        changes.append(f"selector: {before} -> {selector_to_text(new.effective_selector())}")
    return changes


def _target_text(target: Optional[Target]) -> str:
    if target is None:
        return "none"
    return f"{target.model} on {target.data}" if target.data else target.model


def _header(old: Recipe, new: Recipe) -> list[Change]:
    changes = []
    if old.name != new.name:
        changes.append(Change("header", 0, 0, f"recipe name: {old.name!r} -> {new.name!r}"))
    if old.target != new.target:
        changes.append(Change("header", 0, 0, f"target: {_target_text(old.target)} -> {_target_text(new.target)}"))
    return changes


def diff_recipes(old: Recipe, new: Recipe) -> list[Change]:
    """The semantic changes from ``old`` to ``new`` (empty when they would run the same).

    Example:
        >>> from lwdsl import parse
        >>> diff_recipes(parse("prune l1 0.2"), parse("prune layer l1 20%  # same"))
        []
    """
    changes = _header(old, new)
    a, b = [_key(s) for s in old.steps], [_key(s) for s in new.steps]
    removed: dict[int, None] = {}  # insertion-ordered sets: O(1) membership and removal
    added: dict[int, None] = {}
    blocks: list[tuple[range, range]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            blocks.append((range(i1, i2), range(j1, j2)))
            removed.update(dict.fromkeys(range(i1, i2)))
            added.update(dict.fromkeys(range(j1, j2)))
    waiting: dict[str, deque[int]] = defaultdict(deque)  # key -> added steps with it, in order
    for j in added:
        waiting[b[j]].append(j)
    for i in list(removed):  # the same step elsewhere: moved (to the first such added step)
        if waiting.get(a[i]):
            j = waiting[a[i]].popleft()
            del removed[i], added[j]
            changes.append(Change("moved", i + 1, j + 1, f"{step_to_text(old.steps[i])}: step {i + 1} -> {j + 1}"))
    for olds, news in blocks:  # within a block, the same op in order: changed
        by_op: dict[str, deque[int]] = defaultdict(deque)
        for j in news:
            if j in added:
                by_op[new.steps[j].op].append(j)
        for i in olds:
            if i not in removed or not by_op.get(old.steps[i].op):
                continue
            j = by_op[old.steps[i].op].popleft()
            del removed[i], added[j]
            what = "; ".join(_field_changes(old.steps[i], new.steps[j]))
            changes.append(Change("changed", i + 1, j + 1, f"{old.steps[i].op}: {what}"))
    changes += [Change("removed", i + 1, 0, step_to_text(old.steps[i])) for i in removed]
    changes += [Change("added", 0, j + 1, step_to_text(new.steps[j])) for j in added]
    order = {"header": 0, "removed": 1, "changed": 2, "moved": 2, "added": 3}
    return sorted(changes, key=lambda c: (order[c.kind] != 0, max(c.old, c.new), order[c.kind]))


_MARKS = {"header": "~", "removed": "-", "added": "+", "moved": ">", "changed": "~"}


def render_diff(changes: list[Change]) -> str:
    """One line a change: ``- step 3: ...``, ``+ step 3: ...``, ``~ step 2 quantize: ...``."""
    lines = []
    for c in changes:
        if c.kind == "header":
            where = ""
        elif c.kind in ("removed", "changed"):
            where = f"step {c.old}" + (f" (now {c.new})" if c.kind == "changed" and c.new != c.old else "")
        elif c.kind == "added":
            where = f"step {c.new}"
        else:
            where = "moved"
        lines.append(f"{_MARKS[c.kind]} {where + ': ' if where else ''}{c.text}")
    return "\n".join(lines) if lines else "no semantic difference"
