"""From a ``prune`` spec to the rule that picks its masks: the one choice every backend uses.

:func:`rule_for` reads a :class:`~lwdsl.language.specs.PruneSpec` once; :func:`keep_masks` gives the
keep masks of a list of weights (canonical layout, model order) under that rule, one layer at a
time, from :mod:`lwdsl.semantics.masks`. A backend may compute the same masks faster (the torch
backend's in-place magnitude cut, the tensorflow backend's cut in its own layout) only for the
rule kinds whose answer does not depend on how it is computed, and tests check it gives the
same masks. :class:`GradualClock` says when gradual pruning updates its masks and to what
sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from . import masks as M
from .cut import magnitude_cut
from .order import steps_per_epoch

__all__ = ["MaskRule", "rule_for", "keep_masks", "GradualClock"]

_P = {"l1": 1.0, "l2": 2.0}


@dataclass(frozen=True)
class MaskRule:
    """How one prune update chooses its masks.

    ``kind`` is ``magnitude`` (per layer, or over all selected layers when ``scope`` is
    global), ``threshold``, ``random``, ``structured`` (slices along ``axis`` scored by the
    ``p``-norm or at random) or ``nm``. ``amount`` is the fraction (or the threshold) of this
    update; ``seed`` the step seed (random scores).
    """

    kind: str
    amount: float
    scope: str = "layer"
    axis: int = 0
    method: str = "l1"
    p: float = 1.0
    seed: int = 0
    nm: Optional[tuple[int, int]] = None


def rule_for(spec: Any, seed: int, amount: Optional[float] = None) -> MaskRule:
    """The rule of ``spec`` (a PruneSpec) at ``amount`` (default: the spec's AMOUNT; gradual
    pruning asks for the sparsity of the moment).

    >>> from lwdsl.language.specs import PruneSpec
    >>> rule_for(PruneSpec(scope="global", amount=0.2), seed=0).kind
    'magnitude'
    """
    amount = float(spec.amount if amount is None else amount) if (amount is not None or spec.amount is not None) else 0.0
    p = float(spec.n) if spec.method == "ln" else _P.get(spec.method, 1.0)
    if spec.nm is not None:
        return MaskRule("nm", 0.0, nm=(spec.nm.n, spec.nm.m))
    if spec.method == "threshold":
        return MaskRule("threshold", amount)
    if spec.structured != "none":
        return MaskRule("structured", amount, axis=0 if spec.structured == "filters" else 1, method=spec.method, p=p, seed=seed)
    if spec.method == "random":
        return MaskRule("random", amount, scope=spec.scope, seed=seed)
    return MaskRule("magnitude", amount, scope=spec.scope)


def structured_slices(rule: MaskRule, w: np.ndarray) -> np.ndarray:
    """Keep vector over the slices of ``w`` along the rule's axis (structured rules)."""
    if np.ndim(w) < 2:
        from ..errors import LwdslError

        raise LwdslError(f"structured pruning needs a weight with 2 or more axes, got shape {np.shape(w)}")
    return M.structured_keep(w, rule.amount, axis=rule.axis, method=rule.method, p=rule.p, seed=rule.seed)


def keep_masks(rule: MaskRule, weights: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    """The keep mask of each of ``weights`` (canonical layout, model order), in order.

    Masks are yielded one layer at a time: magnitude pruning reads each weight again when its
    mask is asked for, so at most one layer's temporaries exist besides the masks handed out.
    Random scores are one PCG64(seed) sequence over the layers in order (per layer or global).
    """
    if rule.kind == "nm":
        n, m = rule.nm  # type: ignore[misc]
        return (M.nm_keep_mask(w, n, m) for w in weights)
    if rule.kind == "threshold":
        _refuse_total_threshold(rule.amount, weights)
        return (M.threshold_keep_mask(w, rule.amount) for w in weights)
    if rule.kind == "structured":
        return (_broadcast(structured_slices(rule, w), np.shape(w), rule.axis) for w in weights)
    if rule.kind == "random":
        return iter(M.random_keep_masks(list(weights), rule.amount, rule.seed, per_layer=rule.scope == "layer"))
    if rule.scope == "global":
        cut = magnitude_cut(weights, M.count_to_prune(rule.amount, sum(int(np.prod(np.shape(w))) for w in weights)))
        return (cut.keep_mask(i, weights[i]) for i in range(len(weights)))
    return (M.magnitude_keep_masks([w], rule.amount)[0] for w in weights)


def _refuse_total_threshold(threshold: float, weights: Sequence[np.ndarray]) -> None:
    """Refuse a threshold above every ``|w|`` of the selected layers (that have a non-zero
    weight): it would zero the whole selection, a model that answers the same for every input
    (``prune threshold 1e30``). One read of each weight, before any mask is made."""
    largest = max((float(np.max(np.abs(np.asarray(w, dtype=np.float64)))) for w in weights if np.size(w)), default=0.0)
    if largest > 0.0 and largest < float(threshold):
        from ..errors import RecipeError

        raise RecipeError(
            f"prune threshold {threshold:g} would zero every weight of the {len(weights)} selected "
            f"layer{'s' if len(weights) != 1 else ''}: the largest |w| among them is {largest:.6g}",
            found=f"threshold {threshold:g}",
            expected=f"a threshold at most {largest:.6g} (weights with |w| < threshold are zeroed)",
            hint="regularize with l1= first to push weights towards zero, or prune by fraction: prune l1 90%",
        )


def _broadcast(keep: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    view = [1] * len(shape)
    view[axis] = -1
    return np.ascontiguousarray(np.broadcast_to(keep.reshape(view), shape))


class GradualClock:
    """When ``schedule=gradual`` updates its masks, and to what sparsity.

    Steps are optimizer steps; an epoch has ``spe = ceil(N / batch)`` of them. After the
    ``t``-th step (t from 1), at the fractional epoch ``e = t / spe``, the masks are recomputed
    at ``gradual_sparsity(e, AMOUNT, start, final)`` when ``e >= start`` and either
    ``t % frequency == 0`` or ``e >= final``; the first update at ``e >= final`` reaches AMOUNT
    and no update follows. After training one more update at exactly AMOUNT (which changes
    nothing unless training never reached ``final``). Whether an update is due depends on ``t``
    alone (no state carried between calls), so training resumed at an epoch's end (``--resume``)
    updates the masks when the uninterrupted run does.
    """

    def __init__(self, spec: Any, n_train: int) -> None:
        self.spe = steps_per_epoch(n_train, spec.batch)
        self.amount = float(spec.amount)
        self.start = float(spec.start)
        self.end = float(spec.final) if spec.final is not None else float(spec.epochs)
        self.frequency = int(spec.frequency)

    def due(self, t: int) -> Optional[float]:
        """The sparsity to prune to after optimizer step ``t`` (from 1), or None for no update."""
        epoch, before = t / self.spe, (t - 1) / self.spe
        if t > 1 and before >= self.start and before >= self.end:  # step t - 1 made the update that reached AMOUNT
            return None
        if epoch < self.start or (t % self.frequency and epoch < self.end):
            return None
        return M.gradual_sparsity(epoch, self.amount, self.start, self.end)

    def hook(self, update: Callable[[float], None]) -> Callable[[int], bool]:
        """An ``after_step`` for a backend's ``fit``: calls ``update(sparsity)`` when an update
        is due and says whether the masks changed."""

        def after_step(t: int) -> bool:
            sparsity = self.due(t)
            if sparsity is None:
                return False
            update(sparsity)
            return True

        return after_step
