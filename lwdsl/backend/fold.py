"""Batch-norm folding's decisions, written once: which pairs of the selected layers fold, what is
warned of the others, the ``folded`` note, and the pairs a saved state's ``<norm>.folded``
markers name; the numbers are :func:`lwdsl.semantics.fold.fold_batchnorm`'s, the pairs and the
rewritten model each backend's (``fold.py``). docs/semantics.md, "Quantization: batch-norm folding"."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..errors import LwdslError
from .context import StepContext

__all__ = ["foldable", "record_folded", "folded_pairs"]

#: (layer, norm, why it cannot fold or "") for a batch norm fed by a conv/linear layer
Pair = tuple[str, str, str]


def foldable(pairs: Callable[[], Sequence[Pair]], layers: Sequence[str], ctx: StepContext) -> dict[str, str]:
    """Layer -> norm of the model's ``pairs()`` whose layer is among ``layers`` and that fold; each
    other such pair is warned of (it stays float), and a graph ``pairs`` cannot read too (none fold)."""
    try:
        found = pairs()
    except Exception as exc:  # user code the graph walk cannot trace: say so, quantize unfolded
        ctx.warn(
            f"step {ctx.index + 1} (quantize): the model could not be traced ({type(exc).__name__}), so its batch norms "
            "are not folded into the layers before them: they run as float ops between int8 layers"
        )
        return {}
    chosen, todo = set(layers), {}
    for layer, norm, why in found:
        if layer in chosen and why:
            ctx.warn(f"step {ctx.index + 1} (quantize): batch norm '{norm}' is not folded into '{layer}' ({why}); it stays float")
        elif layer in chosen:
            todo[layer] = norm
    return todo


def record_folded(handle: Any, todo: dict[str, str], ctx: StepContext) -> dict[str, str]:
    """``todo`` (layer -> norm, folded) on the handle and in the ``folded`` note; returned."""
    if todo:
        handle.folded.update(todo)
        ctx.notes["folded"] = dict(todo)
    return dict(todo)


def folded_pairs(pairs: Sequence[Pair], norms: Sequence[str], layer_word: str) -> dict[str, str]:
    """Layer -> norm of the ``norms`` a saved state marks folded, in a fresh model's ``pairs``.

    Raises:
        LwdslError: a named norm is not in the model or follows no conv/``layer_word`` layer.
    """
    before = {norm: layer for layer, norm, _ in pairs}
    missing = [n for n in norms if n not in before]
    if missing:
        raise LwdslError(f"the state says batch norm '{missing[0]}' was folded, but the model has no such norm after a "
                         f"conv/{layer_word} layer")
    return {before[n]: n for n in norms}
