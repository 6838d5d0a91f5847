"""``prune`` on Keras: the selected layers' weights in the canonical layout, in model order, the
masks from :mod:`lwdsl.semantics` (bit-identical to torch's, tie order included) converted back
by the same layout functions; the flow is the core's (:mod:`lwdsl.backend.prune`). Why tfmot's
``prune_low_magnitude`` is not used: docs/semantics.md ("Pruning", TensorFlow backend)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lwdsl.backend.prune import PruneParts, prune_handler
from lwdsl.errors import LwdslError
from lwdsl.semantics import masks as M
from lwdsl.semantics.cut import magnitude_cut

from .handle import KerasHandle, KerasWeights
from .layers import LayerView
from .structured import FilterRemoval

__all__ = ["prune", "KerasPruneParts", "selected_views"]

class _Canonical(Sequence):
    """The chosen layers' weights in the canonical layout (``raw``: Keras's), read when indexed
    (views where the layout allows), so no copy of all the weights is ever held."""

    def __init__(self, chosen: list[LayerView], raw: bool = False) -> None:
        self._chosen, self._raw = chosen, raw

    def __len__(self) -> int:
        return len(self._chosen)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        t = self._chosen[i].weight
        return t.variable.numpy() if self._raw else t.to_canon(t.variable.numpy())


def selected_views(handle: KerasHandle, names: Sequence[str]) -> list[LayerView]:
    """The views of ``names`` in model order (the order global pruning ranks ties in)."""
    wanted = set(names)
    found = [v for v in handle.views() if v.name in wanted]
    missing = wanted - {v.name for v in found}
    if missing:
        raise LwdslError(f"no layer with weights named '{sorted(missing)[0]}' in the model")
    return found


class KerasPruneParts(KerasWeights, FilterRemoval, PruneParts):
    """TensorFlow's parts of the core's ``prune`` flow (the removal's: :class:`.structured.FilterRemoval`)."""

    def in_model_order(self, handle: KerasHandle, layers: Sequence[str]) -> list[str]:
        return [v.name for v in selected_views(handle, layers)]

    def magnitude_prune(self, handle: KerasHandle, layers: Sequence[str], amount: float) -> None:
        """The exact cut without moving weights into the canonical layout: its value and how many
        ties each layer gives up depend only on the multiset of magnitudes per layer, not on the
        layout, so they are computed on the Keras arrays as they are. Only a layer holding ties
        at the cut is brought into the canonical layout, to pick its tied weights in canonical
        flat order; masks are identical to the canonical computation."""
        chosen = selected_views(handle, layers)
        raw = _Canonical(chosen, raw=True)
        cut = magnitude_cut(raw, M.count_to_prune(amount, sum(int(np.prod(v.weight.variable.shape)) for v in chosen)))
        for i, view in enumerate(chosen):
            w = raw[i]
            if cut.ties[i]:
                keep = view.weight.from_canon(cut.keep_mask(i, view.weight.to_canon(w)))
            else:
                keep = M.abs_bits(w).reshape(w.shape) >= np.uint32(cut.value_bits)
            handle.add_mask(view, np.ascontiguousarray(keep))

    def canonical_weights(self, handle: KerasHandle, layers: Sequence[str]) -> Sequence[np.ndarray]:
        return _Canonical(selected_views(handle, layers))



#: The ``prune`` handler: the core's flow over this backend's parts.
prune = prune_handler(KerasPruneParts())
