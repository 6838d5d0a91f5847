"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately
Pruned in One-Shot"): prune a linear layer column by column and update the columns not yet
visited so that the layer's output on the calibration inputs changes as little as possible
(the optimal brain surgeon update with the inverse Hessian's Cholesky factor).

Exactly, in float64, for a weight ``W`` ([out, in]) and ``H = X^T X``
(:class:`lwdsl.semantics.hessian.Gram`), as the paper's reference implementation:

1. dead inputs (``H[j, j] == 0``: feature ``j`` never non-zero) get ``H[j, j] = 1`` and
   ``W[:, j] = 0``;
2. damping: ``H += damp * mean(diag(H)) * I`` (``damp`` 0.01 by default);
3. ``U`` = the upper Cholesky factor of ``H^-1`` (``H^-1 = U^T U``);
4. columns are visited in blocks of ``block`` (128 by default; with ``nm=N:M`` rounded down to
   a multiple of M, so no N:M group straddles two blocks). Unstructured: at the start of a
   block, its mask prunes the ``count_to_prune(AMOUNT, out * width)`` weights of lowest
   ``W^2 / diag(U)^2`` over the whole block (the weights as updated so far; ties lower flat
   index first, row-major). N:M: at the first column of each group of M, the N highest
   ``W^2 / diag(U)^2`` of each row's group are kept (:func:`~lwdsl.semantics.masks.nm_keep_scores`);
5. for each column ``i`` of the block: ``q`` = the column with its pruned weights set to 0,
   ``e = (w - q) / U[i, i]``, the block's columns ``i..`` get ``-= e U[i, i..]``; after the
   block, the columns right of it get ``-= E U[block, right]``.

Pruned weights come out as exactly +0.0; the kept ones carry the update.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import RunError
from .masks import count_to_prune, nm_keep_scores

__all__ = ["DAMP", "BLOCK", "damped_inverse_factor", "sparsegpt_prune"]

#: Default dampening, relative to the mean of ``diag(H)`` (the paper's 1%).
DAMP = 0.01
#: Default columns per block (the paper's 128).
BLOCK = 128


def damped_inverse_factor(h: np.ndarray, damp: float, w: Optional[np.ndarray] = None, what: str = "the layer") -> np.ndarray:
    """``U``, the upper Cholesky factor of ``(H + damp * mean(diag(H)) I)^-1``, after dead
    inputs get ``H[j, j] = 1`` (and, when ``w`` is given, ``w[:, j] = 0`` in place). Shared with
    GPTQ.

    Raises:
        RunError: H is not positive definite even after damping (a damaged calibration).
    """
    h = np.array(h, dtype=np.float64, copy=True)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    if w is not None:
        w[:, dead] = 0.0
    h[np.diag_indices_from(h)] += float(damp) * float(np.mean(np.diag(h)))
    try:
        lower = np.linalg.cholesky(h)
        inv_lower = np.linalg.solve(lower, np.eye(len(h)))
        return np.linalg.cholesky(inv_lower.T @ inv_lower).T
    except np.linalg.LinAlgError:
        raise RunError(
            f"{what}: its calibration Hessian X^T X is not positive definite even with damp={damp:g}",
            hint="raise damp= (e.g. damp=0.1), or calibrate on more data (calibrate=N)",
        ) from None


def sparsegpt_prune(
    w: np.ndarray,
    h: np.ndarray,
    amount: Optional[float] = None,
    nm: Optional[tuple[int, int]] = None,
    *,
    damp: float = DAMP,
    block: int = BLOCK,
    what: str = "the layer",
) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, new weight in float64) of ``w`` ([out, in]) pruned by SparseGPT with the
    inputs' Gram matrix ``h`` ([in, in]): ``amount`` of each block, or N:M per row.

    >>> rng = np.random.default_rng(0); x = rng.standard_normal((64, 8)); w = rng.standard_normal((3, 8))
    >>> keep, new = sparsegpt_prune(w, x.T @ x, 0.5)
    >>> int(keep.sum()), bool(np.all(new[~keep] == 0))
    (12, True)
    """
    W = np.array(w, dtype=np.float64, copy=True)
    rows, cols = W.shape
    U = damped_inverse_factor(h, damp, W, what)
    pruned = np.zeros((rows, cols), dtype=bool)
    step = int(block) if nm is None else max(nm[1], int(block) - int(block) % nm[1])
    for i1 in range(0, cols, step):
        i2 = min(i1 + step, cols)
        W1 = W[:, i1:i2].copy()
        U1 = U[i1:i2, i1:i2]
        d = np.diag(U1)
        Q1 = np.zeros_like(W1)
        E1 = np.zeros_like(W1)
        P1 = np.zeros(W1.shape, dtype=bool)
        if nm is None:
            scores = (W1**2 / d[None, :] ** 2).reshape(-1)
            k = count_to_prune(float(amount or 0.0), scores.size)
            P1.reshape(-1)[np.argsort(scores, kind="stable")[:k]] = True
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                j = min(i + nm[1], i2 - i1)
                group = W1[:, i:j] ** 2 / d[None, i:j] ** 2
                P1[:, i:j] = ~nm_keep_scores(group, nm[0], nm[1])
            col = W1[:, i]
            q = np.where(P1[:, i], 0.0, col)
            Q1[:, i] = q
            err = (col - q) / U1[i, i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            E1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
        pruned[:, i1:i2] = P1
    W[pruned] = 0.0
    return ~pruned, W
