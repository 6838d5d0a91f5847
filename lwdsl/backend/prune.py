"""The ``prune`` op's flow, written once: one-shot, or gradual while training.

Which weights a rule keeps is the core's (:mod:`lwdsl.semantics.pruning`, :mod:`.masks`,
:mod:`.cut`, :mod:`.groups`); when they are pruned is decided here: one-shot prunes once;
``schedule=gradual`` checks that a removal can be planned (before any training), trains with
the :class:`~lwdsl.semantics.pruning.GradualClock` updating the masks every ``frequency``
optimizer steps at the cubic schedule's sparsity, and ends with a mask at exactly AMOUNT (and
the removal, with ``remove=true``). A backend gives :class:`PruneParts`: applying one rule to
its weights in place (its fast path: the exact global cut without copying the weights), and
physically removing filters. ``prune auto`` and ``amount=auto`` are the flows of
:mod:`lwdsl.backend.prune_auto`, over the same parts; ``wanda`` and ``sparsegpt`` go to the
calibrated flow (:mod:`lwdsl.backend.calibrated`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

from ..semantics.pruning import GradualClock, MaskRule, rule_for
from ..language.specs import PruneSpec
from .calibrated import CalibratedParts, prune_calibrated
from .context import StepContext
from .prune_auto import prune_auto, prune_level

__all__ = ["PruneParts", "prune_handler"]


class PruneParts(CalibratedParts, ABC):
    """What a backend gives the ``prune`` flow (and, for ``wanda``/``sparsegpt``, the
    :class:`~lwdsl.backend.calibrated.CalibratedParts`)."""

    @abstractmethod
    def in_model_order(self, handle: Any, layers: Sequence[str]) -> list[str]:
        """``layers`` in model order (the order global pruning ranks ties in)."""

    @abstractmethod
    def prune_once(self, handle: Any, rule: MaskRule, layers: Sequence[str], remove: bool, ctx: StepContext) -> Any:
        """One mask update of ``layers`` under ``rule`` (a new mask is ANDed with the layer's
        earlier one); with ``remove`` (structured filters) the pruned filters are cut out.
        Returns the handle (a new one after a removal)."""

    @abstractmethod
    def plan_removal(self, handle: Any, layers: Sequence[str]) -> None:
        """Raise the error a removal of ``layers`` would raise, without changing anything."""

    @abstractmethod
    def fit(self, handle: Any, spec: PruneSpec, ctx: StepContext, **kwargs: Any) -> Any:
        """The backend's ``fit`` (:func:`lwdsl.backend.fit.fit`)."""


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
