"""The flow of the calibrated methods, written once: ``prune wanda`` and ``prune sparsegpt``.

1. The calibration examples: :func:`~lwdsl.semantics.order.calibration_indices` of the
   training set (``calibrate=N``, default 128; a warning when the set has fewer), in batches
   of :data:`CALIBRATION_BATCH` in index order.
2. One pass over them through the model as it is before the step: the backend's
   :meth:`WeightParts.layer_inputs` gives every selected linear layer's inputs on a batch
   (float32, one row per token or example); :class:`~lwdsl.semantics.hessian.Gram` adds
   ``X^T X`` in float64 here. By default every layer is calibrated on the inputs of the model
   as it was before the step (one pass: the methods compared on the same inputs). With
   ``sequential=true`` the calibration is propagated, as the papers do: layers are compressed
   in model order, a group at a time, and every group after the first is calibrated on a new
   pass through the model whose earlier layers are already compressed, collecting that group's
   inputs only; the groups come from the first pass: a layer with the later layers whose
   ``X^T X`` equals its own bit for bit (they read the same input: a Llama block's q/k/v,
   gate/up; GPTQ's "true sequential" order), so a Llama block costs 4 passes, not 7
   (:func:`calibrated_layers`).
3. Layer by layer, in model order: the backend's weight (canonical ``[out, in]``) goes to the
   core (:func:`~lwdsl.semantics.wanda.wanda_keep`,
   :func:`~lwdsl.semantics.sparsegpt.sparsegpt_prune`), and the backend writes back the mask
   and, for SparseGPT, the updated weights (float32).
4. The report row notes the calibration (examples, rows) and each layer's relative output
   error ``||X (W - W')^T||^2 / ||X W^T||^2`` on the calibration inputs
   (:func:`~lwdsl.semantics.hessian.output_error`).

A backend gives :class:`WeightParts`; masks and weights are the core's, so two backends
that see the same calibration inputs write bit-identical masks and weights.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from ..data.stream import prefetched
from ..errors import LwdslError
from ..semantics.hessian import Gram, output_error
from ..semantics.order import calibration_indices
from ..semantics.sparsegpt import sparsegpt_prune
from ..semantics.wanda import wanda_keep
from .context import StepContext

__all__ = ["WeightParts", "CALIBRATION_BATCH", "gram_matrices", "calibrated_layers", "prune_calibrated"]

#: Calibration examples per forward pass.
CALIBRATION_BATCH = 16


class WeightParts:
    """What a backend gives every flow that reads and writes single layers (the calibrated
    methods, ``smoothquant``, ``quantize``, ``prune``): weights in the canonical layout, masks,
    layer inputs; each raises until the backend gives it."""

    def layer_inputs(self, handle: Any, layers: Sequence[str], x: np.ndarray) -> list[np.ndarray]:
        """The inputs of each of ``layers`` when the model (float activations) runs on the batch
        ``x``, in inference mode, as float32 ``[rows, last axis]`` (one row per token, example or
        position), in order."""
        raise LwdslError("this backend cannot collect calibration inputs")

    def weight(self, handle: Any, layer: str) -> np.ndarray:
        """The layer's weight, float32, canonical layout (``[out, in]``; a norm's is 1-D), its
        mask applied (a copy)."""
        raise LwdslError("this backend cannot hand over weights")

    def set_weight(self, handle: Any, layer: str, w: np.ndarray) -> None:
        """Write the layer's weight exactly (float32, canonical layout)."""
        raise LwdslError("this backend cannot write weights")

    def norm_bias(self, handle: Any, layer: str) -> Optional[np.ndarray]:
        """A norm's bias (a copy; a LayerNorm's beta), None for a norm without one (RMSNorm)."""
        raise LwdslError("this backend cannot hand over a norm's bias")

    def set_norm_bias(self, handle: Any, layer: str, b: np.ndarray) -> None:
        """Write a norm's bias exactly (float32)."""
        raise LwdslError("this backend cannot write a norm's bias")

    def keep_mask(self, handle: Any, layer: str) -> Optional[np.ndarray]:
        """The layer's pruning keep mask (bool, canonical layout), or None when it has none."""
        return None

    def add_keep(self, handle: Any, layer: str, keep: np.ndarray) -> None:
        """AND a canonical keep mask into ``layer``'s mask, zeroing what it prunes."""
        raise LwdslError("this backend cannot prune")

    def set_pruned(self, handle: Any, layer: str, keep: np.ndarray, w: np.ndarray) -> None:
        """Write ``w`` (float32 ``[out, in]``, zero where ``keep`` is False) as the layer's
        weight and AND ``keep`` into its mask."""
        self.set_weight(handle, layer, w)
        self.add_keep(handle, layer, keep)


def calibration_inputs(parts: Any, handle: Any, layers: Sequence[str], count: int, ctx: StepContext, label: str,
                       visit: Callable[[str, np.ndarray], None], warn: bool = True) -> int:
    """``visit(layer, its inputs as float32)`` for every layer of ``layers``, batch by batch, over
    ``count`` calibration examples (:func:`lwdsl.semantics.order.calibration_indices`; all of
    them, with a warning unless ``warn`` is False, when there are fewer); returns the examples
    seen. ``parts`` gives ``layer_inputs(handle, layers, batch)``."""
    x = ctx.data.train_x
    n = len(x)
    if count > n and warn:
        ctx.warn(f"step {ctx.index + 1} ({label}): calibrate={count} exceeds the {n} training examples; calibrating on all {n}")
    idx = calibration_indices(n, count, ctx.seed)
    bar = ctx.progress(-(-len(idx) // CALIBRATION_BATCH), f"calibrate {len(idx)} examples")
    keys = (idx[start : start + CALIBRATION_BATCH] for start in range(0, len(idx), CALIBRATION_BATCH))
    try:
        for _, batch in prefetched(x, keys):
            for name, seen in zip(layers, parts.layer_inputs(handle, layers, batch)):
                visit(name, np.asarray(seen, dtype=np.float32))
            bar.update(1)
    finally:
        bar.close()
    return len(idx)


def gram_matrices(parts: WeightParts, handle: Any, layers: Sequence[str], count: int, ctx: StepContext,
                  label: str, warn: bool = True) -> tuple[dict[str, Gram], int]:
    """Each layer's :class:`Gram` over ``count`` calibration examples; returns (grams, examples)."""
    grams: dict[str, Gram] = {}
    seen = calibration_inputs(parts, handle, layers, count, ctx, label,
                              lambda name, inputs: grams.setdefault(name, Gram(inputs.shape[-1])).update(inputs), warn)
    return grams, seen


def calibrated_layers(parts: WeightParts, handle: Any, layers: Sequence[str], count: int, ctx: StepContext,
                      label: str, method: str, sequential: bool = False) -> Iterator[tuple[str, Gram]]:
    """``(layer, its Gram)`` for every layer of ``layers`` (model order), each yielded before the
    next is calibrated: the caller compresses the layer (writes its weights) between two. One
    pass over ``count`` calibration examples, or with ``sequential`` a pass for every group of
    layers sharing one ``X^T X`` (module docstring), over the model as the caller left it.
    ``ctx.notes["calibration"]`` gets ``examples``, ``rows`` and, with ``sequential``, ``passes``;
    progress: a bar of the layers (``method``) after the one pass, a bar a pass when sequential."""
    ctx.notes["calibration"] = {"examples": 0, "rows": 0}
    if not layers:
        return
    # the first pass: every layer's inputs; which layers share one (the same X^T X) is the model's structure
    grams, examples = gram_matrices(parts, handle, layers, count, ctx, f"{label} pass 1" if sequential else label)
    groups = _shared_inputs(layers, grams) if sequential else [list(layers)]
    rows = 0
    for passes, group in enumerate(groups, 1):
        if passes > 1:  # sequential: the next group's inputs only, on the model compressed so far
            grams, examples = gram_matrices(parts, handle, group, count, ctx, f"{label} pass {passes}", warn=False)
        rows = max([rows, *(grams[name].rows for name in group)])
        ctx.notes["calibration"] = {"examples": examples, "rows": rows, **({"passes": passes} if sequential else {})}
        bar = ctx.progress(len(group), f"{method} {len(group)} layers") if not sequential else None
        try:
            for name in group:
                yield name, grams[name]
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()


def _shared_inputs(layers: Sequence[str], grams: dict[str, Gram]) -> list[list[str]]:
    """``layers`` (model order) in groups: each the first layer not yet grouped and the later
    ones whose ``X^T X`` equals its own bit for bit (they read the same tensor)."""
    groups: list[list[str]] = []
    grouped: set[str] = set()
    for i, name in enumerate(layers):
        if name not in grouped:
            groups.append([name] + [o for o in layers[i + 1 :] if o not in grouped and np.array_equal(grams[o].h, grams[name].h)])
            grouped.update(groups[-1])
    return groups


def prune_calibrated(parts: WeightParts, handle: Any, spec: Any, layers: Sequence[str], ctx: StepContext) -> Any:
    """``prune wanda|sparsegpt`` of ``layers`` (linear, model order); returns the handle."""
    label = f"prune {spec.method}"
    nm = (spec.nm.n, spec.nm.m) if spec.nm is not None else None
    errors: dict[str, float] = {}
    for name, gram in calibrated_layers(parts, handle, layers, spec.calibrate, ctx, label, spec.method, spec.sequential):
        w = parts.weight(handle, name)
        if spec.method == "wanda":
            keep = wanda_keep(w, gram.column_norms(), spec.amount, nm)
            new = np.where(keep, w, np.float32(0.0)).astype(np.float32)
        else:
            keep, updated = sparsegpt_prune(w, gram.h, spec.amount, nm, damp=spec.damp, block=spec.block,
                                            what=f"step {ctx.index + 1} ({label}) layer {name}")
            new = updated.astype(np.float32)
            new[~keep] = 0.0
        parts.set_pruned(handle, name, keep, new)
        errors[name] = round(output_error(w, new, gram.h), 8)
    if spec.method == "sparsegpt":
        ctx.notes["calibration"].update(damp=spec.damp, block=spec.block)
    ctx.notes["layer_output_error"] = errors
    return handle
