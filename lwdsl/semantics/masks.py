"""Which weights a prune step removes: the one definition both backends use.

Everything here works on numpy arrays in the canonical (PyTorch) layout, so the PyTorch and
TensorFlow backends get bit-identical masks from identical weights: they convert their weights
to that layout, ask this module, and apply the answer. The rules are in docs/semantics.md:

- ``k = count_to_prune(amount, n)`` elements (or slices) are pruned: ``round_half_even(amount*n)``.
- Magnitudes are compared exactly, as the bit patterns of ``|w|`` in float32 (for finite floats
  the unsigned bit pattern orders exactly like the value); ties at the cut are pruned lowest
  flat index first; for several layers the flat index runs over the layers in the given order.
- Masks returned are *keep* masks: True where the weight stays.

Global selection never concatenates or sorts the weights: a two-pass histogram over the 16 high
and then the 16 low bits of ``|w|`` finds the exact k-th smallest magnitude in O(n) time with
memory bounded by one chunk, so 1B parameters fit beside the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import RunError

__all__ = [
    "count_to_prune",
    "abs_bits",
    "MagnitudeCut",
    "magnitude_cut",
    "magnitude_keep_masks",
    "threshold_keep_mask",
    "random_keep_masks",
    "random_scores",
    "prune_lowest",
    "structured_keep",
    "nm_keep_mask",
    "nm_keep_scores",
    "gradual_sparsity",
]

_CHUNK = 1 << 22  # elements per histogram chunk: bounds the temporary memory
_SIGN_OFF = np.uint32(0x7FFFFFFF)
_INF_BITS = 0x7F800000


def count_to_prune(amount: float, count: int) -> int:
    """How many of ``count`` elements (or slices) a fraction ``amount`` prunes.

    Round half to even of the float64 product, as Python's ``round`` does (``0.5*5 -> 2``).

    >>> count_to_prune(0.2, 431080), count_to_prune(0.5, 5)
    (86216, 2)
    """
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be in [0, 1], got {amount}")
    return int(round(float(amount) * int(count)))


def abs_bits(w: np.ndarray) -> np.ndarray:
    """The float32 bit patterns of ``|w|`` as uint32, flattened (orders like ``|w|``)."""
    flat = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    return flat.view(np.uint32) & _SIGN_OFF


def _chunks(bits_of: Iterable[np.ndarray]) -> Iterable[tuple[int, np.ndarray]]:
    for i, w in enumerate(bits_of):
        flat = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
        for start in range(0, flat.size, _CHUNK):
            yield i, flat[start : start + _CHUNK].view(np.uint32) & _SIGN_OFF


@dataclass(frozen=True)
class MagnitudeCut:
    """The exact cut for magnitude pruning over a list of weight arrays.

    Elements with ``abs_bits < value_bits`` are pruned, and of those with ``abs_bits ==
    value_bits`` the first ``ties[i]`` (in flat order) of array ``i``.
    """

    value_bits: int
    ties: tuple[int, ...]
    pruned: int

    @property
    def value(self) -> float:
        return float(np.array([self.value_bits], dtype=np.uint32).view(np.float32)[0])

    def keep_mask(self, i: int, w: np.ndarray) -> np.ndarray:
        """The keep mask of array ``i`` (same shape as ``w``)."""
        bits = abs_bits(w)
        keep = bits >= np.uint32(self.value_bits)
        if self.ties[i]:
            eq = np.flatnonzero(bits == np.uint32(self.value_bits))[: self.ties[i]]
            keep[eq] = False
        return keep.reshape(np.shape(w))

    def prune_inplace(self, i: int, w: np.ndarray) -> None:
        """Zero the pruned elements of ``w`` (a writable float32 array) chunk by chunk."""
        flat = w.reshape(-1)
        left = self.ties[i]
        vb = np.uint32(self.value_bits)
        for start in range(0, flat.size, _CHUNK):
            part = flat[start : start + _CHUNK]
            bits = part.view(np.uint32) & _SIGN_OFF
            if left:
                eq = np.flatnonzero(bits == vb)[:left]
                part[eq] = 0.0
                left -= eq.size
            part[bits < vb] = 0.0


def magnitude_cut(weights: Sequence[np.ndarray], k: int) -> MagnitudeCut:
    """The cut that prunes exactly ``k`` smallest-magnitude elements over ``weights``.

    Raises:
        RunError: if a weight is NaN or infinite (its magnitude has no order).
    """
    sizes = [int(np.size(w)) for w in weights]
    total = sum(sizes)
    if not 0 <= k <= total:
        raise ValueError(f"k={k} outside [0, {total}]")
    if k == 0:
        return MagnitudeCut(0, (0,) * len(weights), 0)
    hist = np.zeros(1 << 16, dtype=np.int64)
    for _, bits in _chunks(weights):
        hist += np.bincount(bits >> 16, minlength=1 << 16)
    if hist[_INF_BITS >> 16 :].any():
        raise RunError("a selected weight is NaN or infinite: the model is broken, nothing to prune by magnitude")
    cum = np.cumsum(hist)
    high = int(np.searchsorted(cum, k))
    below = int(cum[high - 1]) if high else 0
    hist = np.zeros(1 << 16, dtype=np.int64)
    for _, bits in _chunks(weights):
        sel = bits[(bits >> 16) == high]
        if sel.size:
            hist += np.bincount(sel & 0xFFFF, minlength=1 << 16)
    cum = np.cumsum(hist)
    low = int(np.searchsorted(cum, k - below))
    less = below + (int(cum[low - 1]) if low else 0)
    value = (high << 16) | low
    need = k - less
    ties = []
    for w in weights:
        if need <= 0:
            ties.append(0)
            continue
        eq = int(np.count_nonzero(abs_bits(w) == np.uint32(value)))
        take = min(eq, need)
        ties.append(take)
        need -= take
    return MagnitudeCut(value, tuple(ties), k)


def magnitude_keep_masks(weights: Sequence[np.ndarray], amount: float) -> list[np.ndarray]:
    """Keep masks pruning ``amount`` of all elements of ``weights`` together by magnitude.

    Per-layer pruning is the same call with one array.

    >>> import numpy as np
    >>> magnitude_keep_masks([np.array([0.3, -0.1, 0.1, 0.2], np.float32)], 0.5)[0].tolist()
    [True, False, False, True]
    """
    k = count_to_prune(amount, sum(int(np.size(w)) for w in weights))
    cut = magnitude_cut(weights, k)
    return [cut.keep_mask(i, w) for i, w in enumerate(weights)]


def threshold_keep_mask(w: np.ndarray, threshold: float) -> np.ndarray:
    """Keep ``|w| >= threshold``; the comparison is exact, in float64."""
    return np.abs(np.asarray(w, dtype=np.float64)) >= float(threshold)


def random_scores(sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """One uniform score per element of each size, from one PCG64 stream seeded ``seed``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return [rng.random(n) for n in sizes]


def prune_lowest(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep mask over a 1-D score vector pruning the k lowest (ties: lower index first)."""
    keep = np.ones(scores.size, dtype=bool)
    keep[np.argsort(scores, kind="stable")[:k]] = False
    return keep


def random_keep_masks(
    weights: Sequence[np.ndarray], amount: float, seed: int, *, per_layer: bool = False
) -> list[np.ndarray]:
    """Prune ``amount`` of the elements at random: numpy PCG64(seed) draws one float64 score
    per element, layer after layer in flat order (one sequence over all the layers); the
    lowest scores are pruned, over all the layers together or, with ``per_layer``, ``amount``
    of each layer (so two layers of the same shape still get different masks)."""
    sizes = [int(np.size(w)) for w in weights]
    scores = random_scores(sizes, seed)
    if per_layer:
        return [prune_lowest(s, count_to_prune(amount, n)).reshape(np.shape(w)) for w, s, n in zip(weights, scores, sizes)]
    keep = prune_lowest(np.concatenate(scores), count_to_prune(amount, sum(sizes)))
    out, start = [], 0
    for w, n in zip(weights, sizes):
        out.append(keep[start : start + n].reshape(np.shape(w)))
        start += n
    return out


def structured_keep(
    w: np.ndarray, amount: float, *, axis: int, method: str, p: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Keep vector over the slices of ``w`` along ``axis`` (0: filters/out, 1: channels/in).

    The score of a slice is its Ln norm, ``(sum |w|^p)^(1/p)`` in float64 (p=1 for l1, 2 for
    l2, n for ln), or a PCG64(seed) draw for random; the ``k`` lowest are pruned, ties lower
    index first.
    """
    w = np.asarray(w, dtype=np.float64)
    slices = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    if method == "random":
        scores = random_scores([slices.shape[0]], seed)[0]
    else:
        scores = np.sum(np.abs(slices) ** p, axis=1) ** (1.0 / p)
    return prune_lowest(scores, count_to_prune(amount, slices.shape[0]))


def nm_keep_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M keep mask: per output row (axis 0), in every M consecutive weights of the row's
    flattened inputs keep the N of largest magnitude (ties: lower index pruned first); a last
    partial group of r < M weights keeps min(r, N)."""
    shape = np.shape(w)
    return nm_keep_scores(abs_bits(w).reshape(shape[0], -1), n, m).reshape(shape)


def nm_keep_scores(rows: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M keep mask over a 2-d score array (one row per output): in every M consecutive
    scores of a row keep the N largest (ties: lower index pruned first); a last partial group
    of r < M keeps min(r, N). Magnitude, Wanda and SparseGPT's N:M masks all come from here.

    >>> nm_keep_scores(np.array([[4.0, 1.0, 3.0, 2.0, 5.0]]), 2, 4).astype(int).tolist()
    [[1, 0, 1, 0, 1]]
    """
    cols = rows.shape[1]
    keep = np.ones(rows.shape, dtype=bool)
    full = cols // m * m
    if full:
        groups = rows[:, :full].reshape(rows.shape[0], -1, m)
        order = np.argsort(groups, axis=-1, kind="stable")[..., : m - n]
        gkeep = np.ones_like(groups, dtype=bool)
        np.put_along_axis(gkeep, order, False, axis=-1)
        keep[:, :full] = gkeep.reshape(rows.shape[0], full)
    rest = cols - full
    if rest > n:
        order = np.argsort(rows[:, full:], axis=-1, kind="stable")[:, : rest - n]
        tail = np.ones((rows.shape[0], rest), dtype=bool)
        np.put_along_axis(tail, order, False, axis=-1)
        keep[:, full:] = tail
    return keep


def gradual_sparsity(epoch: float, final_sparsity: float, start: float, end: float, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017) cubic schedule: the sparsity to hold at ``epoch`` (may be fractional).

    ``s = s_f + (s_i - s_f) * (1 - p)^3`` with ``p = clip((epoch - start) / (end - start), 0, 1)``.

    >>> gradual_sparsity(0, 0.9, 0, 10), gradual_sparsity(10, 0.9, 0, 10)
    (0.0, 0.9)
    """
    p = min(max((epoch - start) / (end - start), 0.0), 1.0)
    return final_sparsity + (initial - final_sparsity) * (1.0 - p) ** 3
