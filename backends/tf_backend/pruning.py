"""``prune``: which weights go is decided by :mod:`lwdsl.masks` on the canonical layout.

The selected layers' weights are converted to the canonical (PyTorch) layout in model order,
:func:`canonical_keep_masks` asks :mod:`lwdsl.masks` for keep masks (the one definition both
backends share), and the masks are converted back to the Keras layout with the same function
that converts the weights. So identical weights give bit-identical masks on both frameworks,
including the tie order (lowest canonical flat index first) and the Flatten row order.

tfmot's ``prune_low_magnitude`` is not used to choose weights: it keeps every weight at or
above the k-th largest magnitude (so ties at the cut keep more weights than asked), ranks in
the Keras layout (a different flat order for conv and flatten-fed Dense kernels), and has no
global, threshold, random or Ln-structured selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Iterator

import numpy as np

from lwdsl import masks as M
from lwdsl.errors import LwdslError
from lwdsl.specs import PruneSpec

from .handle import KerasHandle
from .layout import LayerView

__all__ = ["canonical_keep_masks", "selected_views", "prune_masks", "prune_oneshot", "remove_pruned_filters"]

_P = {"l1": 1.0, "l2": 2.0}


def _norm_p(spec: PruneSpec) -> float:
    return float(spec.n) if spec.method == "ln" else _P.get(spec.method, 1.0)


def canonical_keep_masks(spec: PruneSpec, weights: Sequence[np.ndarray], seed: int, amount: float | None = None) -> Iterator[np.ndarray]:
    """Keep masks for ``weights`` (canonical layout, model order) as ``spec`` defines them,
    one layer at a time (magnitude pruning reads each weight again when its mask is asked for,
    so at most one layer's temporaries exist besides the masks already handed out).

    ``amount`` overrides ``spec.amount`` (gradual pruning asks for the sparsity of the moment).
    Random scores are one PCG64(seed) sequence over the layers in order (per layer or global).
    """
    amount = spec.amount if amount is None else amount
    if spec.nm is not None:
        return (M.nm_keep_mask(w, spec.nm.n, spec.nm.m) for w in weights)
    if spec.method == "threshold":
        return (M.threshold_keep_mask(w, amount) for w in weights)
    if spec.structured != "none":
        return (_structured(spec, w, amount, seed) for w in weights)
    if spec.method == "random":
        return iter(M.random_keep_masks(list(weights), amount, seed, per_layer=spec.scope == "layer"))
    if spec.scope == "global":
        cut = M.magnitude_cut(weights, M.count_to_prune(amount, sum(int(np.prod(np.shape(w))) for w in weights)))
        return (cut.keep_mask(i, weights[i]) for i in range(len(weights)))
    return (M.magnitude_keep_masks([w], amount)[0] for w in weights)


def _structured(spec: PruneSpec, w: np.ndarray, amount: float, seed: int) -> np.ndarray:
    axis = 0 if spec.structured == "filters" else 1
    if np.ndim(w) < 2:
        raise LwdslError(f"structured={spec.structured} needs a weight with 2 or more axes, got shape {np.shape(w)}")
    keep = M.structured_keep(w, amount, axis=axis, method=spec.method, p=_norm_p(spec), seed=seed)
    shape = [1] * np.ndim(w)
    shape[axis] = -1
    return np.broadcast_to(keep.reshape(shape), np.shape(w))


class _Canonical(Sequence):
    """The chosen layers' weights in the canonical layout, read when indexed (views where the
    layout allows), so no copy of all the weights is ever held."""

    def __init__(self, chosen: list[LayerView]) -> None:
        self._chosen = chosen

    def __len__(self) -> int:
        return len(self._chosen)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        t = self._chosen[i].weight
        return t.to_canon(t.variable.numpy())


def selected_views(handle: KerasHandle, names: Sequence[str]) -> list[LayerView]:
    """The views of ``names`` in model order (the order global pruning ranks ties in)."""
    wanted = set(names)
    found = [v for v in handle.views() if v.name in wanted]
    missing = wanted - {v.name for v in found}
    if missing:
        raise LwdslError(f"no layer with weights named '{sorted(missing)[0]}' in the model")
    return found


def _global_magnitude(handle: KerasHandle, chosen: list[LayerView], amount: float) -> None:
    """Global magnitude pruning without moving weights into the canonical layout.

    The cut's value and how many ties each layer gives up depend only on the multiset of
    magnitudes per layer, not on the layout, so they are computed on the Keras arrays as they
    are. Only a layer holding ties at the cut is brought into the canonical layout, to pick its
    tied weights in canonical flat order; masks are identical to the canonical computation."""

    class _Raw(Sequence):
        def __len__(self) -> int:
            return len(chosen)

        def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
            return chosen[i].weight.variable.numpy()

    raw = _Raw()
    cut = M.magnitude_cut(raw, M.count_to_prune(amount, sum(int(np.prod(v.weight.variable.shape)) for v in chosen)))
    for i, view in enumerate(chosen):
        w = raw[i]
        if cut.ties[i]:
            keep = view.weight.from_canon(cut.keep_mask(i, view.weight.to_canon(w)))
        else:
            keep = M.abs_bits(w).reshape(w.shape) >= np.uint32(cut.value_bits)
        handle.set_mask(view, np.ascontiguousarray(keep))


def prune_masks(handle: KerasHandle, spec: PruneSpec, chosen: list[LayerView], seed: int, amount: float | None = None) -> list[np.ndarray]:
    """Compute the keep masks of ``chosen`` and apply them (ANDed with older masks); returns the
    canonical masks of a structured prune (for ``remove=true``), else an empty list."""
    if spec.scope == "global" and spec.method in ("l1", "l2", "ln") and spec.structured == "none" and spec.nm is None:
        _global_magnitude(handle, chosen, spec.amount if amount is None else amount)
        return []
    kept = []
    for view, keep in zip(chosen, canonical_keep_masks(spec, _Canonical(chosen), seed, amount)):
        handle.set_mask(view, np.ascontiguousarray(view.weight.from_canon(keep)))
        if spec.structured != "none":
            kept.append(keep)
    return kept


def prune_oneshot(handle: KerasHandle, spec: PruneSpec, names: Sequence[str], seed: int) -> KerasHandle:
    """Prune ``names`` at once; with ``remove=true`` the pruned filters are cut out."""
    chosen = selected_views(handle, names)
    canon = prune_masks(handle, spec, chosen, seed)
    return remove_pruned_filters(handle, chosen, canon) if spec.remove else handle


def remove_pruned_filters(handle: KerasHandle, chosen: list[LayerView], canon: list[np.ndarray]) -> KerasHandle:
    """Cut out the filters that the structured masks ``canon`` (canonical layout) prune."""
    from .surgery import remove_filters

    return remove_filters(handle, {v.name: m.reshape(m.shape[0], -1).any(axis=1) for v, m in zip(chosen, canon)})
