"""The ``prune`` op's flow, written once: one-shot, or gradual while training.

Which weights a rule keeps is the core's (:mod:`lwdsl.semantics.pruning`, :mod:`.masks`,
:mod:`.cut`, :mod:`.groups`); when they are pruned is decided here: one-shot prunes once;
``schedule=gradual`` checks that a removal can be planned (before any training), trains with
the :class:`~lwdsl.semantics.pruning.GradualClock` updating the masks every ``frequency``
optimizer steps at the cubic schedule's sparsity, and ends with a mask at exactly AMOUNT (and
the removal, with ``remove=true``). One mask update and the removal of filters per dependency
group are written here too, over the :class:`PruneParts` a backend gives (its fast exact
magnitude cut, canonical weights and masks, groups, channels cut out of its layers). ``prune
auto`` and ``amount=auto`` are the flows of :mod:`lwdsl.backend.prune_auto`, over the same
parts; ``wanda`` and ``sparsegpt`` go to the calibrated flow (:mod:`lwdsl.backend.calibrated`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import numpy as np

from ..semantics.groups import AXIS, Group, axis_keeps, group_keep, select_groups
from ..semantics.pruning import GradualClock, MaskRule, keep_masks, rule_for
from ..language.specs import PruneSpec
from .calibrated import WeightParts, prune_calibrated
from .context import StepContext
from .prune_auto import prune_auto, prune_level

__all__ = ["PruneParts", "prune_handler"]


class PruneParts(WeightParts, ABC):
    """What a backend gives the ``prune`` flow (and, for ``wanda``/``sparsegpt``, the
    :class:`~lwdsl.backend.calibrated.WeightParts`)."""

    @abstractmethod
    def in_model_order(self, handle: Any, layers: Sequence[str]) -> list[str]:
        """``layers`` in model order (the order global pruning ranks ties in)."""

    @abstractmethod
    def magnitude_prune(self, handle: Any, layers: Sequence[str], amount: float) -> None:
        """Mask ``amount`` of the weights of ``layers`` together by magnitude: exactly the core's cut (a fast path)."""

    @abstractmethod
    def canonical_weights(self, handle: Any, layers: Sequence[str]) -> Sequence[np.ndarray]:
        """The weights of ``layers`` in the canonical layout (read when indexed, no copy where it can)."""

    @abstractmethod
    def groups(self, handle: Any) -> list[Group]:
        """The model's dependency groups (:class:`lwdsl.semantics.groups.GraphBuilder`)."""

    @abstractmethod
    def cut_channels(self, handle: Any, kept: dict[tuple[str, int], np.ndarray], groups: Sequence[Group]) -> Any:
        """Keep the indices ``kept[(layer, canonical axis)]`` only (masks alike); the handle (new if rebuilt)."""

    def fit(self, handle: Any, spec: PruneSpec, ctx: StepContext, **kwargs: Any) -> Any:
        """Gradual pruning's training: the backend's :meth:`~lwdsl.backend.Backend.fit`."""
        return ctx.backend.fit(handle, spec, ctx, **kwargs)

    def prune_once(self, handle: Any, rule: MaskRule, layers: Sequence[str], remove: bool, ctx: StepContext) -> Any:
        """One mask update of ``layers`` under ``rule`` (a new mask is ANDed with the layer's
        earlier one); with ``remove`` (structured filters) the pruned filters are cut out.
        Returns the handle (a new one after a removal)."""
        if rule.kind == "structured" and remove:
            return self.remove_filters(handle, rule, layers, ctx)
        if rule.kind == "magnitude":  # the exact cut, by the backend's fast path
            for group in ([list(layers)] if rule.scope == "global" else [[name] for name in layers]):
                self.magnitude_prune(handle, group, rule.amount)
            return handle
        for name, keep in zip(layers, keep_masks(rule, self.canonical_weights(handle, layers))):
            self.add_keep(handle, name, keep)
        return handle

    def axis_size(self, handle: Any, layer: str, axis: int) -> int:
        """The length of ``layer``'s canonical weight ``axis`` (a norm's: its channels on 0)."""
        return int(np.shape(self.canonical_weights(handle, [layer])[0])[axis])

    def plan_removal(self, handle: Any, layers: Sequence[str]) -> list[Group]:
        """The dependency groups that removing filters of ``layers`` prunes; raises LwdslError
        naming the first layer whose filters cannot be removed, and why."""
        return select_groups(self.groups(handle), layers)

    def remove_filters(self, handle: Any, rule: MaskRule, layers: Sequence[str], ctx: StepContext) -> Any:
        """Remove the filters ``rule`` prunes (:mod:`lwdsl.semantics.groups`) from every group ``layers``
        produce, everything checked first; noted: each group's channels before and after."""
        chosen = self.plan_removal(handle, layers)
        weight = lambda name: self.canonical_weights(handle, [name])[0]  # noqa: E731
        keeps = [group_keep(g, weight, rule.amount, rule.method, rule.p, rule.seed) for g in chosen]
        sizes = {(m.layer, AXIS[m.role]): self.axis_size(handle, m.layer, AXIS[m.role]) for g in chosen for m in g.members}
        handle = self.cut_channels(handle, axis_keeps(chosen, keeps, sizes), chosen)
        ctx.notes["groups"] = [f"{g.name}: {g.channels} -> {int(k.sum())} channels" for g, k in zip(chosen, keeps)]
        return handle


def prune_handler(parts: PruneParts) -> Callable[..., Any]:
    """The ``prune`` handler over a backend's :class:`PruneParts`."""

    def prune(handle: Any, spec: PruneSpec, layers: Sequence[str], ctx: StepContext) -> Any:
        """The ``prune`` handler: one-shot, or gradual while training (:class:`GradualClock`)."""
        layers = parts.in_model_order(handle, layers)
        if spec.method in spec.CALIBRATED:
            return prune_calibrated(parts, handle, spec, layers, ctx)
        seed = ctx.step_seed()
        if spec.method == "auto":  # per-layer amounts from measured sensitivity
            return prune_auto(parts, handle, spec, layers, ctx)
        if spec.amount == "auto":  # the step search over the level
            return prune_level(parts, handle, spec, layers, ctx)
        if spec.schedule == "oneshot":
            return parts.prune_once(handle, rule_for(spec, seed), layers, spec.remove, ctx)
        if spec.remove:
            parts.plan_removal(handle, layers)  # fail before training, not after
        update = GradualClock(spec, ctx.train_examples(spec.batch)).hook(
            lambda sparsity: parts.prune_once(handle, rule_for(spec, seed, sparsity), layers, False, ctx))
        parts.fit(handle, spec, ctx, label=f"prune gradual to {spec.amount:g}", mask_layers=layers, after_step=update)
        return parts.prune_once(handle, rule_for(spec, seed), layers, spec.remove, ctx)

    return prune
