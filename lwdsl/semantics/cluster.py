"""Weight sharing (Han et al. 2016, "Deep Compression"): the one definition of a layer's
codebook and cluster codes.

``quantize cluster bits=B`` gives every selected layer one codebook of ``2^B`` float32 values
and each weight a ``B``-bit code (an index into it). The rules (also in docs/semantics.md):

- **code 0 is reserved for zero**: ``codebook[0] = +0.0``, and every weight equal to 0 (+0.0
  or -0.0: a pruned weight) gets code 0, so a pruned model keeps its exact zeros. Only the
  non-zero weights are clustered, into ``K = 2^B - 1`` centroids (``codebook[1:]``).
- **linear initialisation** (Han et al.'s best): ``c_j = lo + (hi - lo) * j / (K - 1)``,
  ``j = 0 .. K-1``, with ``lo, hi`` the smallest and largest non-zero weight, in float64.
- **Lloyd iterations** in float64 on the weights' float64 values: assign each weight to the
  nearest centroid (``|w - c_j|``; a tie goes to the lowest ``j``); stop when the assignment
  is the one of the previous iteration, or after :data:`MAX_ITERATIONS`; otherwise every
  centroid becomes the mean of its weights (``np.bincount``, so the sum's order is fixed; a
  centroid with no weight keeps its value). The codes are the final assignment to the final
  centroids (after the last update, when the cap stopped it).
- ``codebook[1:] = f32(c)``, in the centroids' order (ascending: 1-D Lloyd from sorted
  centroids keeps them sorted). Code of a non-zero weight = its centroid's ``j + 1``.
- A layer with no non-zero weight: codebook all +0.0, codes 0. NaN or inf raises RunError.

The weight a clustered layer computes with is ``codebook[codes]`` (float32, exact).
Training afterwards keeps the codebook fixed and moves codes (:func:`nearest_codes`), as the
other forms keep their scales; Han et al. instead trained the centroids with the codes fixed.
The code of a float32 ``w`` at a fixed codebook: of the codebook's distinct values in ascending
order (:func:`codebook_levels`, each with the lowest code holding it), take the largest one below
``w`` and the smallest one at or above it (``searchsorted``, side left; one of them at the
ends), and of those two the one at the smaller float32 distance ``|w - v|``, a tie going to
the lower code (so 0.0, code 0, wins its ties). Every step is an exact float32 comparison or
subtraction, so torch and TensorFlow (``searchsorted`` too) reproduce it bit for bit.

**Packing**: the codes as unsigned ``B``-bit fields, by the one bit packer of
:mod:`lwdsl.semantics.packing` (:func:`~lwdsl.semantics.packing.pack_indices`, re-exported here
for old imports), ``ceil(n * B / 8)`` bytes.
"""

from __future__ import annotations

import numpy as np

from ..errors import RunError
from .packing import pack_indices, unpack_indices

__all__ = [
    "MAX_ITERATIONS",
    "CLUSTER_BITS",
    "cluster_weight",
    "codebook_levels",
    "nearest_codes",
    "pack_indices",
    "unpack_indices",
]

#: The most Lloyd iterations a layer gets (LeNet layers settle within it: ~20-60 at 4 bits).
MAX_ITERATIONS = 100

#: The codebook sizes ``quantize cluster`` takes: ``bits`` in 2..8.
CLUSTER_BITS = (2, 3, 4, 5, 6, 7, 8)


def _assign(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted centroids ``c`` for each ``x`` (float64); a tie goes
    to the lower index (``np.argmin`` takes the first minimum)."""
    out = np.empty(x.size, dtype=np.int64)
    step = max(1, (1 << 22) // max(c.size, 1))  # bounded temporary memory
    for start in range(0, x.size, step):
        out[start : start + step] = np.argmin(np.abs(x[start : start + step, None] - c[None, :]), axis=1)
    return out


def cluster_weight(w: np.ndarray, bits: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Cluster a layer's weights into a ``2^bits`` codebook with code 0 = 0.0 (module rules).

    Args:
        w: the weight (any layout: the codes keep its shape); converted to float32.
        bits: 2..8.

    Returns:
        ``(codes, codebook)``: uint8 codes of ``w``'s shape in ``[0, 2^bits)``, and the float32
        codebook of ``2^bits`` values, ``codebook[0] == +0.0``.

    Raises:
        RunError: NaN or infinite weights.
        ValueError: bits outside 2..8.

    >>> codes, book = cluster_weight(np.array([[0.0, 1.0, 1.1, -1.0], [0.0, 2.0, 1.9, -0.0]], np.float32), 2)
    >>> codes.tolist(), book.tolist()
    ([[0, 2, 2, 1], [0, 3, 3, 0]], [0.0, -1.0, 1.0499999523162842, 1.9500000476837158])
    """
    if not isinstance(bits, (int, np.integer)) or int(bits) not in CLUSTER_BITS:
        raise ValueError(f"cluster bits must be an integer in 2..8, got {bits!r}")
    w = np.asarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise RunError("a weight to cluster is NaN or infinite: the model is broken, nothing to cluster")
    k = 2 ** int(bits) - 1
    flat = w.reshape(-1)
    nonzero = flat != 0
    codes = np.zeros(flat.size, dtype=np.uint8)
    book = np.zeros(k + 1, dtype=np.float32)
    x = flat[nonzero].astype(np.float64)
    if not x.size:
        return codes.reshape(w.shape), book
    lo, hi = float(x.min()), float(x.max())
    c = lo + (hi - lo) * (np.arange(k, dtype=np.float64) / (k - 1))
    assign = _assign(x, c)
    for _ in range(MAX_ITERATIONS):
        count = np.bincount(assign, minlength=k)
        total = np.bincount(assign, weights=x, minlength=k)
        c = np.where(count > 0, total / np.maximum(count, 1), c)
        new = _assign(x, c)
        if np.array_equal(new, assign):
            break
        assign = new
    else:
        assign = _assign(x, c)
    codes[nonzero] = (assign + 1).astype(np.uint8)
    book[1:] = c.astype(np.float32)
    return codes.reshape(w.shape), book


def codebook_levels(codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the codebook's distinct values ascending, float32; the lowest code holding each, uint8).

    >>> [a.tolist() for a in codebook_levels(np.array([0.0, -1.0, 0.5, 0.5], np.float32))]
    [[-1.0, 0.0, 0.5], [1, 0, 2]]
    """
    values, first = np.unique(np.asarray(codebook, dtype=np.float32).reshape(-1), return_index=True)
    return values.astype(np.float32), first.astype(np.uint8)


def nearest_codes(w: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Codes of ``w`` at a fixed codebook (module rules: the nearer of the two distinct values
    around ``w``, float32 distances, a tie to the lower code), so ``codebook[codes]`` of a
    codebook value is itself. As uint8, ``w``'s shape.

    >>> nearest_codes(np.array([0.2, 0.25, 0.5, -0.9, 1.0, 7.0], np.float32), np.array([0.0, -1.0, 1.0, 0.5], np.float32)).tolist()
    [0, 0, 3, 1, 2, 2]
    """
    w = np.asarray(w, dtype=np.float32)
    values, codes = codebook_levels(codebook)
    i = np.searchsorted(values, w, side="left")
    lo, hi = np.maximum(i - 1, 0), np.minimum(i, values.size - 1)
    d_lo, d_hi = np.abs(w - values[lo]), np.abs(w - values[hi])
    take_lo = (d_lo < d_hi) | ((d_lo == d_hi) & (codes[lo] < codes[hi]))
    return np.where(take_lo, codes[lo], codes[hi]).astype(np.uint8)
