"""``prune`` on Keras: the selected layers' weights in the canonical layout, in model order, the
masks from :mod:`lwdsl.semantics` (bit-identical to torch's, tie order included) converted back
by the same layout functions; the flow is the core's (:mod:`lwdsl.backend.prune`). Why tfmot's
``prune_low_magnitude`` is not used: docs/semantics.md ("Pruning", TensorFlow backend)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import weakref

import numpy as np

from lwdsl.backend import StepContext
from lwdsl.backend.prune import PruneParts, prune_handler
from lwdsl.errors import LwdslError
from lwdsl.semantics import masks as M
from lwdsl.semantics.cut import magnitude_cut
from lwdsl.semantics.pruning import MaskRule, keep_masks
from lwdsl.language.specs import PruneSpec

from ._tf import keras
from .handle import KerasHandle
from .layers import LayerView
from .structured import plan_removal, remove_filters
from .train import fit, nhwc

#: The layer-input models of :meth:`KerasPruneParts.layer_inputs`, per Keras model (dropped with it).
_TAPS: "weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]]" = weakref.WeakKeyDictionary()

__all__ = ["prune", "KerasPruneParts", "selected_views"]

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
    cut = magnitude_cut(raw, M.count_to_prune(amount, sum(int(np.prod(v.weight.variable.shape)) for v in chosen)))
    for i, view in enumerate(chosen):
        w = raw[i]
        if cut.ties[i]:
            keep = view.weight.from_canon(cut.keep_mask(i, view.weight.to_canon(w)))
        else:
            keep = M.abs_bits(w).reshape(w.shape) >= np.uint32(cut.value_bits)
        handle.add_mask(view, np.ascontiguousarray(keep))


class KerasPruneParts(PruneParts):
    """TensorFlow's parts of the core's ``prune`` flow."""

    def in_model_order(self, handle: KerasHandle, layers: Sequence[str]) -> list[str]:
        return [v.name for v in selected_views(handle, layers)]

    def prune_once(self, handle: KerasHandle, rule: MaskRule, layers: Sequence[str], remove: bool, ctx: StepContext) -> KerasHandle:
        chosen = selected_views(handle, layers)
        if rule.kind == "magnitude" and rule.scope == "global":
            _global_magnitude(handle, chosen, rule.amount)
            return handle
        if rule.kind == "structured" and remove:  # per dependency group: see structured.py
            return remove_filters(handle, rule, list(layers), ctx)
        for view, keep in zip(chosen, keep_masks(rule, _Canonical(chosen))):
            handle.add_mask(view, np.ascontiguousarray(view.weight.from_canon(keep)))
        return handle

    def layer_inputs(self, handle: KerasHandle, layers: Sequence[str], x: np.ndarray) -> list[np.ndarray]:
        """One pass over ``x`` in inference mode through a model whose outputs are the inputs of
        ``layers`` (Keras 3's ``layer.input`` of each layer's call), each as float32 ``[rows, in]``;
        that model is built once per model and layer list (the core calls this batch by batch)."""
        model = handle.model
        built = _TAPS.setdefault(model, {})
        key = tuple(layers)
        if key not in built:
            by_name = {v.name: v for v in selected_views(handle, layers)}
            built[key] = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs,
                                     [by_name[name].layer.input for name in layers])
        seen = built[key](nhwc(x), training=False)
        seen = seen if isinstance(seen, (list, tuple)) else [seen]
        return [np.asarray(t, dtype=np.float32).reshape(-1, int(t.shape[-1])) for t in seen]

    def weight(self, handle: KerasHandle, layer: str) -> np.ndarray:
        return np.array(selected_views(handle, [layer])[0].weight.canonical(), dtype=np.float32)

    def set_pruned(self, handle: KerasHandle, layer: str, keep: np.ndarray, w: np.ndarray) -> None:
        view = selected_views(handle, [layer])[0]
        t = view.weight
        t.variable.assign(np.ascontiguousarray(t.from_canon(np.asarray(w, dtype=np.float32)), dtype=np.float32))
        handle.add_mask(view, np.ascontiguousarray(t.from_canon(np.asarray(keep, dtype=bool))))

    def plan_removal(self, handle: KerasHandle, layers: Sequence[str]) -> None:
        plan_removal(handle, list(layers))

    def fit(self, handle: KerasHandle, spec: PruneSpec, ctx: StepContext, **kwargs: Any) -> Any:
        return fit(handle, spec, ctx, **kwargs)


#: The ``prune`` handler: the core's flow over this backend's parts.
prune = prune_handler(KerasPruneParts())
