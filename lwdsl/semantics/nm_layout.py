"""The N:M-compressed layout of a pruned, quantized layer's codes: which positions each group
keeps, as one small integer a group, and the kept codes only.

**Groups** are those of :func:`lwdsl.semantics.masks.nm_keep_mask`: per output row (axis 0),
every ``M`` consecutive weights of the row's flattened inputs; a last partial group of ``r < M``
weights keeps ``min(r, N)``. A keep mask is N:M when every full group keeps exactly ``N`` and
the last partial group ``min(r, N)``.

**Positions**: the ``C(M, N)`` ways of keeping ``N`` of ``M`` positions, in lexicographic
order of their position tuples (2:4: ``(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)`` are
ranks 0..5), and each group stored as its rank in ``ceil(log2 C(M, N))`` bits (2:4: 3 bits a
group of 4). A partial last group with ``r > N`` is ranked as if padded with pruned positions;
with ``r <= N`` it keeps all and has no rank. The ranks are packed by the one bit packer
(:func:`lwdsl.semantics.packing.pack_fields`, row by row, groups in order), so layouts need
``C(M, N) <= 256`` (every N:M with ``M <= 8``, and 1:16, 2:16, 14:16, 15:16).

Why a rank and not NVIDIA's/Marlin's 2-bit index of each kept value: 3 bits a group of 4
against 4, the same information (the index pairs are one table lookup of the rank away), and
0.75 against 1 bit a weight is the difference between 25% and 20% off int4 with float32 group-32
scales (5 bits a weight against 3.75 or 4). The entropy bound, ``log2 6 = 2.585`` bits a group,
would take an arithmetic code across groups; not worth its decoder for 0.1 bit a weight.

**Kept codes**: the codes where the mask keeps, in C order (row by row, groups in order,
positions ascending), whatever their value: a kept weight quantized to code 0 is stored as 0, so
the mask comes back exactly, not the non-zero codes.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Optional

import numpy as np

__all__ = ["nm_patterns", "pattern_bits", "nm_counts", "find_nm", "nm_split", "nm_join", "MAX_PATTERNS"]

#: the most patterns a group may have (their ranks are fields of at most 8 bits)
MAX_PATTERNS = 256
_MAX_M = 16


@lru_cache(maxsize=None)
def nm_patterns(n: int, m: int) -> np.ndarray:
    """The ``C(m, n)`` keep patterns of a group, ``(C(m, n), m)`` bool, row ``k`` the pattern of
    rank ``k`` (lexicographic order of the kept positions).

    >>> nm_patterns(2, 4).astype(int).tolist()[:3]
    [[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]]
    """
    combos = list(itertools.combinations(range(m), n))
    out = np.zeros((len(combos), m), dtype=bool)
    for k, pos in enumerate(combos):
        out[k, list(pos)] = True
    out.setflags(write=False)
    return out


@lru_cache(maxsize=None)
def _rank_table(n: int, m: int) -> np.ndarray:
    """Bit pattern of a group (position j as bit j) -> its rank, -1 where it keeps not n."""
    table = np.full(1 << m, -1, dtype=np.int16)
    weights = 1 << np.arange(m)
    table[(nm_patterns(n, m) * weights).sum(axis=1)] = np.arange(math.comb(m, n))
    table.setflags(write=False)
    return table


def pattern_bits(n: int, m: int) -> int:
    """Bits of a group's rank: ``ceil(log2 C(m, n))``.

    >>> pattern_bits(2, 4), pattern_bits(4, 8), pattern_bits(1, 4)
    (3, 7, 2)
    """
    return max(1, math.ceil(math.log2(math.comb(m, n))))


def nm_counts(rows: int, cols: int, n: int, m: int) -> tuple[int, int]:
    """(kept codes, ranks) of a ``rows x cols`` layer in the N:M layout.

    >>> nm_counts(3, 10, 2, 4)
    (18, 6)
    """
    full, rest = divmod(int(cols), int(m))
    return rows * (full * n + min(rest, n)), rows * (full + (rest > n))


def _fits(keep: np.ndarray, n: int, m: int) -> bool:
    """Whether the 2-d keep mask ``keep`` is N:M (module docstring)."""
    rows, cols = keep.shape
    full = cols // m * m
    if full and not (np.count_nonzero(keep[:, :full].reshape(rows, -1, m), axis=-1) == n).all():
        return False
    rest = cols - full
    return not rest or bool((np.count_nonzero(keep[:, full:], axis=-1) == min(rest, n)).all())


def find_nm(keep: np.ndarray) -> list[tuple[int, int]]:
    """Every N:M (``0 < N < M <= 16``, ``C(M, N) <= 256``, at least one full group a row) that the
    keep mask ``keep`` (canonical layout, output rows on axis 0) is, fewest bits a weight first
    (a 2:4 mask is 4:8 too: ``(2, 4)`` comes first, 0.75 against 0.875 bits of position a weight).

    >>> find_nm(np.tile(np.array([1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1], bool), (3, 1)))
    [(2, 4), (4, 8)]
    """
    rows = np.asarray(keep, dtype=bool).reshape(np.shape(keep)[0] if np.ndim(keep) else 1, -1)
    if rows.size == 0:
        return []
    found = []
    for m in range(2, min(_MAX_M, rows.shape[1]) + 1):
        n = int(rows[0, :m].sum())
        if 0 < n < m and math.comb(m, n) <= MAX_PATTERNS and _fits(rows[:1], n, m) and _fits(rows, n, m):
            found.append((n, m))
    return sorted(found, key=lambda nm: (pattern_bits(*nm) / nm[1], nm[1]))


def nm_split(codes: np.ndarray, keep: np.ndarray, n: int, m: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(the kept codes, C order; each group's rank, uint8) of ``codes`` under the N:M mask
    ``keep`` (both the weight's shape), or None when a pruned position holds a non-zero code (the
    layout could not give it back).

    >>> c = np.array([[3, 0, -8, 0, 0, 0, 7, 5]], np.int8)
    >>> kept, ranks = nm_split(c, c != 0, 2, 4)
    >>> kept.tolist(), ranks.tolist()
    ([3, -8, 7, 5], [1, 5])
    """
    flat = np.asarray(codes).reshape(np.shape(codes)[0], -1)
    rows = np.asarray(keep, dtype=bool).reshape(flat.shape)
    if np.any(np.where(rows, 0, flat)):
        return None
    cols = rows.shape[1]
    full = cols // m * m
    groups = rows[:, :full].reshape(rows.shape[0], -1, m)
    if cols - full > n:  # a partial last group that prunes: ranked as if padded with pruned positions
        tail = np.zeros((rows.shape[0], 1, m), dtype=bool)
        tail[:, 0, : cols - full] = rows[:, full:]
        groups = np.concatenate([groups, tail], axis=1)
    bitsof = np.zeros(groups.shape[:-1], dtype=np.int32)  # position j as bit j
    for j in range(m):
        bitsof |= groups[..., j].astype(np.int32) << j
    ranks = _rank_table(n, m)[bitsof]
    return flat[rows], ranks.astype(np.uint8).reshape(-1)


def nm_join(kept: np.ndarray, ranks: np.ndarray, shape: tuple[int, ...], n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`nm_split`: (the codes of ``shape``, zeros where pruned; the keep mask).

    Raises:
        ValueError: counts that do not fit ``shape``, or a rank that is no pattern (a damaged file).

    >>> codes, keep = nm_join(np.array([3, -8, 7, 5], np.int8), np.array([1, 5], np.uint8), (1, 8), 2, 4)
    >>> codes.tolist(), keep.astype(int).tolist()
    ([[3, 0, -8, 0, 0, 0, 7, 5]], [[1, 0, 1, 0, 0, 0, 1, 1]])
    """
    out = int(shape[0])
    cols = math.prod(shape[1:])
    want_kept, want_ranks = nm_counts(out, cols, n, m)
    kept, ranks = np.asarray(kept).reshape(-1), np.asarray(ranks).reshape(-1)
    if kept.size != want_kept or ranks.size != want_ranks:
        raise ValueError(f"holds {kept.size} kept codes and {ranks.size} positions; {n}:{m} of shape {list(shape)} "
                         f"has {want_kept} and {want_ranks}")
    patterns = nm_patterns(n, m)
    if ranks.size and int(ranks.max()) >= len(patterns):
        raise ValueError(f"holds position {int(ranks.max())}; {n}:{m} has {len(patterns)} (0..{len(patterns) - 1})")
    full, rest = divmod(cols, m)
    groups = patterns[ranks.astype(np.intp)].reshape(out, -1, m)
    keep = np.ones((out, cols), dtype=bool)
    keep[:, : full * m] = groups[:, :full].reshape(out, full * m)
    if rest > n:
        tail = groups[:, full]
        if tail[:, rest:].any():
            raise ValueError(f"keeps a position past the last of the {cols} inputs of a row")
        keep[:, full * m:] = tail[:, :rest]
    codes = np.zeros((out, cols), dtype=kept.dtype)
    codes[keep] = kept
    return codes.reshape(shape), keep.reshape(shape)
