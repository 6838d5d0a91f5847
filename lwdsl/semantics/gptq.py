"""GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2023, "GPTQ: Accurate Post-Training Quantization
for Generative Pre-trained Transformers"): quantize a linear layer column by column and update
the columns not yet visited so that the layer's output on the calibration inputs changes as
little as possible (the optimal brain surgeon update, as SparseGPT's, with rounding to the grid
in place of pruning).

Exactly, in float64, for a weight ``W`` ([out, in]), ``H = X^T X``
(:class:`lwdsl.semantics.hessian.Gram`), ``bits``, a ``grid`` (``[qmin, qmax]`` of
:func:`lwdsl.semantics.codes.code_bounds`: ``[-qmax, qmax]`` narrow, ``[-qmax - 1, qmax]``
full, ``qmax = 2^(bits-1) - 1``) and an optional keep mask (a pruned layer: its zeros stay
zeros):

1. dead inputs and damping as SparseGPT (:func:`lwdsl.semantics.sparsegpt.damped_inverse_factor`):
   ``U``, the upper Cholesky factor of ``(H + damp * mean(diag(H)) I)^-1``, dead columns of
   ``W`` set to 0;
2. the scales are round-to-nearest's, fixed before any update
   (:func:`lwdsl.semantics.codes.quantize_weight` of ``W`` with the pruned weights and dead
   columns at 0: symmetric, zero point 0, ``scale = f32(m) / qmax`` on the narrow grid, ``f32(m)
   / (qmax + 1/2)`` on the full one, ``m`` the max ``|W|`` of
   the output row or, with ``group=G``, of each ``G`` consecutive columns of the row; a group
   whose scale would be below ``2^-126`` is all zeros, scale 1, codes 0). Fixed scales
   ("static groups") measured lower errors than scales taken from the updated weights when a
   group is reached (the paper's reference code): on random correlated layers
   (bench/gptq_scales.py), 0.0052 vs 0.0054 at int4 g32 and 0.27 vs 0.66 at int2 g32, where
   the updated weights grow;
3. columns are visited in blocks of ``block`` (128). For column ``i``: ``c = clip(rint(w /
   s), qmin, qmax)`` (in float64, ``w`` the column as updated, ``s`` its scale), 0 where the
   mask prunes or the group is zero; ``q = f32(c) * s`` in float32 (the weight the model
   computes with); ``e = (w - q) / U[i, i]``; the block's columns ``i..`` get
   ``-= e U[i, i..]``; after the block, the columns right of it get ``-= E U[block, right]``.

The result is a :class:`~lwdsl.semantics.codes.WeightQuant` (int8 codes, float32 scales
``(out,)`` or ``(out, ceil(in / G))``) whose ``dequantize()`` is the new weight, exactly.

Columns are visited in *activation order* (the paper's ``act_order``, "static" in
llm-compressor): by decreasing ``H[j, j]``, ties by index (a stable sort), with ``H`` and ``U``
permuted alike; the scales stay those of the natural groups, fixed in step 2, so a group's
codes share one scale whatever the order. Measured against llm-compressor's GPTQ on the same
tiny Llama (bench/llmc_bench.py), natural order left lwdsl's per-layer errors higher on every
layer (int4 g32 mean 0.0040 vs 0.0037).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .codes import WeightQuant, code_bounds, quantize_weight
from .sparsegpt import BLOCK, DAMP, damped_inverse_factor

__all__ = ["gptq_quantize"]

_TINY = np.float32(2.0**-126)  # as lwdsl.semantics.codes: no scale is below the smallest normal float32

def gptq_quantize(
    w: np.ndarray,
    h: np.ndarray,
    bits: int,
    group: Optional[int] = None,
    keep: Optional[np.ndarray] = None,
    *,
    damp: float = DAMP,
    block: int = BLOCK,
    what: str = "the layer",
    act_order: bool = True,
    grid: str = "narrow",
) -> WeightQuant:
    """The GPTQ codes and scales of ``w`` ([out, in]) at ``bits`` (2..8), per row or in groups
    of ``group`` inputs, with the inputs' Gram matrix ``h`` ([in, in]); where ``keep`` is False
    the code is 0. ``grid``: ``narrow`` or ``full`` (the clamp and scale rule of
    :func:`lwdsl.semantics.codes.quantize_weight`).

    Raises:
        RunError: H is not positive definite even after damping.

    >>> rng = np.random.default_rng(0); x = rng.standard_normal((64, 8)); w = rng.standard_normal((3, 8))
    >>> q = gptq_quantize(w, x.T @ x, 4, group=4)
    >>> q.codes.dtype.name, q.scale.shape, int(np.abs(q.codes).max()) <= 7
    ('int8', (3, 2), True)
    >>> q = gptq_quantize(w, x.T @ x, 2, group=4, grid="full")
    >>> q.grid, int(q.codes.min()) >= -2, int(q.codes.max()) <= 1
    ('full', True, True)
    """
    if not 2 <= int(bits) <= 8:
        raise ValueError(f"GPTQ bits must be 2..8, got {bits!r}")
    W = np.array(w, dtype=np.float64, copy=True)
    rows, cols = W.shape
    keep = None if keep is None else np.asarray(keep, dtype=bool)
    if keep is not None:
        W[~keep] = 0.0
    W[:, np.diag(np.asarray(h)) == 0] = 0.0  # dead inputs: their columns are 0 before the scales are taken
    rtn = quantize_weight(W.astype(np.float32), int(bits), "per_channel", group, grid)  # the fixed scales
    full = rtn.full_scale()
    full = np.broadcast_to(full, W.shape).astype(np.float32)
    lo, hi = code_bounds(int(bits), grid)
    qmin, qmax = float(lo), float(hi)
    fixed = np.ones(W.shape, dtype=bool) if keep is None else keep.copy()  # where a code may be non-zero
    fixed &= ~_zero_groups(W.astype(np.float32), group, np.float32((hi - lo) / 2))
    # activation order ("static" act-order): the columns visited by decreasing H_jj (ties by
    # index), the scales still those of the natural groups, fixed above
    perm = np.argsort(-np.diag(np.asarray(h, dtype=np.float64)), kind="stable") if act_order else np.arange(cols)
    W, full, fixed = W[:, perm], np.ascontiguousarray(full[:, perm]), fixed[:, perm]
    U = damped_inverse_factor(np.asarray(h, dtype=np.float64)[np.ix_(perm, perm)], damp, W, what)
    codes = np.zeros((rows, cols), dtype=np.int8)
    s64 = full.astype(np.float64)
    for i1 in range(0, cols, int(block)):
        i2 = min(i1 + int(block), cols)
        W1 = W[:, i1:i2].copy()
        U1 = U[i1:i2, i1:i2]
        E1 = np.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            wcol = W1[:, i]
            c = np.where(fixed[:, col], np.clip(np.rint(wcol / s64[:, col]), qmin, qmax), 0.0)
            codes[:, col] = c.astype(np.int8)
            q = (c.astype(np.float32) * full[:, col]).astype(np.float64)
            err = (wcol - q) / U1[i, i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            E1[:, i] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    out = np.zeros_like(codes)
    out[:, perm] = codes
    return WeightQuant(out, rtn.scale, int(bits), 0, group=rtn.group, grid=grid)


def _zero_groups(w: np.ndarray, group: Optional[int], div: np.float32) -> np.ndarray:
    """Where the row (or group) of ``w`` (float32) is zero by the integer rule (``m / div <
    2^-126``, ``div`` the grid's divisor, ``qmax`` or ``qmax + 1/2``: scale 1, codes 0), as
    ``w``'s shape."""
    mag = np.abs(w)
    starts = np.arange(0, w.shape[1], w.shape[1] if group is None else int(group))
    m = np.maximum.reduceat(mag, starts, axis=1) if w.shape[1] else np.zeros((w.shape[0], 0), np.float32)
    dead = (m / div) < _TINY
    width = w.shape[1] if group is None else int(group)
    return np.repeat(dead, width, axis=1)[:, : w.shape[1]]
