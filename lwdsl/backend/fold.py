"""Batch-norm folding's flow, written once: which pairs of the selected layers fold, what is
warned of the others, the numbers (:func:`lwdsl.semantics.fold.fold_batchnorm`), the ``folded``
note; a backend gives :class:`FoldParts`. docs/semantics.md, "Quantization: batch-norm folding"."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from ..errors import LwdslError
from ..semantics.fold import fold_batchnorm
from .context import StepContext

__all__ = ["FoldParts", "fold_batchnorms", "folded_pairs"]


class FoldParts(ABC):
    """What a backend gives the folding flow."""

    @abstractmethod
    def pairs(self, handle: Any) -> list[tuple[str, str, str]]:
        """(layer, norm, why it cannot fold or "") for every batch norm fed by a conv/linear layer."""

    @abstractmethod
    def fold_inputs(self, handle: Any, layer: str, norm: str) -> tuple:
        """:func:`~lwdsl.semantics.fold.fold_batchnorm`'s arguments: ``layer``'s canonical tensors (masked), ``norm``'s."""

    @abstractmethod
    def write_folded(self, handle: Any, todo: dict[str, str], folded: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """The folded canonical (weight, bias) into each layer of ``todo`` (layer -> norm), each norm gone."""


def fold_batchnorms(parts: FoldParts, handle: Any, layers: Sequence[str], ctx: StepContext) -> dict[str, str]:
    """Fold the norms after ``layers`` into them; returns layer -> norm folded (also in
    ``ctx.notes["folded"]`` and ``handle.folded``). A norm that cannot fold is warned of and
    stays float; a model whose graph cannot be read is warned of and nothing folds."""
    try:
        pairs = parts.pairs(handle)
    except Exception as exc:  # user code the graph walk cannot trace: say so, quantize unfolded
        ctx.warn(
            f"step {ctx.index + 1} (quantize): the model could not be traced ({type(exc).__name__}), so its batch norms "
            "are not folded into the layers before them: they run as float ops between int8 layers"
        )
        return {}
    chosen = set(layers)
    todo: dict[str, str] = {}
    for layer, norm, why in pairs:
        if layer not in chosen:
            continue
        if why:
            ctx.warn(f"step {ctx.index + 1} (quantize): batch norm '{norm}' is not folded into '{layer}' ({why}); it stays float")
            continue
        todo[layer] = norm
    if not todo:
        return {}
    folded = {layer: fold_batchnorm(*parts.fold_inputs(handle, layer, norm)) for layer, norm in todo.items()}
    parts.write_folded(handle, todo, folded)
    handle.folded.update(todo)
    ctx.notes["folded"] = dict(todo)
    return dict(todo)


def folded_pairs(pairs: Sequence[tuple[str, str, str]], norms: Sequence[str], layer_word: str) -> dict[str, str]:
    """Layer -> norm for the ``norms`` a saved state marks folded (``<norm>.folded``), from a
    freshly built model's ``pairs``: what the model is rewritten by before that state loads.

    Raises:
        LwdslError: a named norm is not in the model or follows no conv/``layer_word`` layer.
    """
    before = {norm: layer for layer, norm, _ in pairs}
    missing = [n for n in norms if n not in before]
    if missing:
        raise LwdslError(f"the state says batch norm '{missing[0]}' was folded, but the model has no such norm after a "
                         f"conv/{layer_word} layer")
    return {before[n]: n for n in norms}
