"""Wanda (Sun, Liu, Bair, Kolter 2023, "A Simple and Effective Pruning Approach for Large
Language Models"): prune by weight magnitude times input-feature norm, per output row.

The score of weight ``W[i, j]`` of a linear layer (canonical layout ``[out, in]``) is
``|W[i, j]| * ||X_j||_2``, with ``||X_j||_2`` the norm of input feature ``j`` over the
calibration inputs (:meth:`lwdsl.semantics.hessian.Gram.column_norms`), in float64. The
comparison group is the output row (the paper's choice): each row loses
``k = count_to_prune(AMOUNT, in)`` weights, the lowest scores, ties lower index first. With
``nm=N:M`` each M consecutive weights of a row keep their N highest scores
(:func:`lwdsl.semantics.masks.nm_keep_scores`). The kept weights are not changed.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .masks import count_to_prune, nm_keep_scores

__all__ = ["wanda_scores", "wanda_keep"]


def wanda_scores(w: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """``|W| * ||X_j||_2`` (float64, ``[out, in]``)."""
    return np.abs(np.asarray(w, dtype=np.float64)) * np.asarray(norms, dtype=np.float64)[None, :]


def wanda_keep(w: np.ndarray, norms: np.ndarray, amount: Optional[float] = None, nm: Optional[tuple[int, int]] = None) -> np.ndarray:
    """Wanda's keep mask of ``w`` ([out, in]) given the input norms (``[in]``): ``amount`` of
    every row, or N:M per row.

    >>> w = np.array([[1.0, -2.0, 3.0, 0.5]]); norms = np.array([4.0, 1.0, 1.0, 1.0])
    >>> wanda_keep(w, norms, 0.5).astype(int).tolist(), wanda_keep(w, norms, nm=(1, 2)).astype(int).tolist()
    ([[1, 0, 1, 0]], [[1, 0, 1, 0]])
    """
    scores = wanda_scores(w, norms)
    if nm is not None:
        return nm_keep_scores(scores, nm[0], nm[1])
    k = count_to_prune(float(amount or 0.0), scores.shape[1])
    keep = np.ones(scores.shape, dtype=bool)
    if k:
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
        np.put_along_axis(keep, order, False, axis=1)
    return keep
