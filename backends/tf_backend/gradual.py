"""``prune ... schedule=gradual``: the cubic ramp of Zhu & Gupta (2017) while training.

Steps are optimizer steps; an epoch has ``spe = ceil(N / batch)`` of them
(:func:`lwdsl.order.steps_per_epoch`). After the ``t``-th step (t counted from 1), at the
fractional epoch ``e = t / spe``, the masks are recomputed for sparsity
``gradual_sparsity(e, AMOUNT, start, final)`` (:func:`lwdsl.masks.gradual_sparsity`) when
``e >= start`` and either ``t % frequency == 0`` or ``e >= final``; the first update at
``e >= final`` reaches AMOUNT and the masks stay fixed from then on. After the last step they
are recomputed once more at exactly AMOUNT (which changes nothing unless training never
reached ``final``), and with ``remove=true`` the pruned filters are cut out. This is the
torch backend's counting, step for step.

Every recomputation ranks the current weights (pruned ones are zero, so they go first) with
the same selection as one-shot pruning and ANDs the result into the masks.
"""

from __future__ import annotations

from typing import Sequence

from lwdsl.backend import StepContext
from lwdsl.masks import gradual_sparsity
from lwdsl.order import steps_per_epoch
from lwdsl.specs import PruneSpec

from .handle import KerasHandle
from .pruning import prune_masks, remove_pruned_filters, selected_views
from .surgery import plan_removal
from .training import fit

__all__ = ["prune_gradual"]


def prune_gradual(handle: KerasHandle, spec: PruneSpec, names: Sequence[str], ctx: StepContext) -> KerasHandle:
    """Train for ``spec.epochs`` while the sparsity of ``names`` ramps up to ``spec.amount``."""
    chosen = selected_views(handle, names)
    if spec.remove:
        plan_removal(handle.model, [v.name for v in chosen])  # fail before training, not after
    spe = steps_per_epoch(len(ctx.data.train_x), spec.batch)
    end = spec.final if spec.final is not None else float(spec.epochs)
    seed = ctx.step_seed()
    reached = False

    def after_step(t: int) -> bool:
        nonlocal reached
        epoch = t / spe
        if reached or epoch < spec.start or (t % spec.frequency and epoch < end):
            return False
        prune_masks(handle, spec, chosen, seed, gradual_sparsity(epoch, spec.amount, spec.start, end))
        reached = epoch >= end
        return True

    fit(handle, spec, ctx, description=f"prune gradual to {spec.amount:g}", mask_layers=[v.name for v in chosen], after_step=after_step)
    last = prune_masks(handle, spec, chosen, seed, spec.amount)
    return remove_pruned_filters(handle, chosen, last) if spec.remove else handle
