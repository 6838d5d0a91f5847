"""Keras's weight layouts <-> the canonical (PyTorch) layout, in numpy: for a kernel of a given
Keras shape, its canonical shape and the two converters, exact inverses of each other, used for
the weights and for their masks alike (docs/semantics.md, "Canonical weights").

>>> shape, to_c, from_c = transposed((5, 5, 1, 20))
>>> shape, from_c(to_c(np.zeros((5, 5, 1, 20)))).shape
((20, 1, 5, 5), (5, 5, 1, 20))
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

__all__ = ["Convert", "Layout", "identity", "transposed", "depthwise", "dense", "flatten_rows"]

Convert = Callable[[np.ndarray], np.ndarray]
#: (canonical shape, Keras -> canonical, canonical -> Keras)
Layout = tuple[tuple[int, ...], Convert, Convert]


def _same(a: np.ndarray) -> np.ndarray:
    return a


def identity(shape: Sequence[int]) -> Layout:
    """A variable whose layout is the canonical one (biases, norms, embeddings)."""
    return tuple(int(d) for d in shape), _same, _same


def transposed(shape: Sequence[int]) -> Layout:
    """A convolution kernel ``(*k, in, out)`` -> ``(out, in, *k)`` (Conv2DTranspose's
    ``(kh, kw, out, in)`` -> ``(in, out, kh, kw)`` by the same permutation)."""
    n = len(shape)
    perm = (n - 1, n - 2, *range(n - 2))
    inverse = tuple(int(i) for i in np.argsort(perm))
    return tuple(int(shape[p]) for p in perm), (lambda a: np.transpose(a, perm)), (lambda a: np.transpose(a, inverse))


def depthwise(shape: Sequence[int]) -> Layout:
    """A depthwise kernel ``(kh, kw, c, m)`` -> ``(c*m, 1, kh, kw)``."""
    kh, kw, c, m = (int(d) for d in shape)

    def to_c(a: np.ndarray) -> np.ndarray:
        return np.transpose(a.reshape(kh, kw, c * m, 1), (2, 3, 0, 1))

    def from_c(a: np.ndarray) -> np.ndarray:
        return np.transpose(a, (2, 3, 0, 1)).reshape(kh, kw, c, m)

    return (c * m, 1, kh, kw), to_c, from_c


def dense(shape: Sequence[int], source: Optional[tuple[int, ...]]) -> Layout:
    """A Dense kernel ``(in, out)`` -> ``(out, in)``; fed by a Flatten of a ``source`` map
    (*spatial, C), its rows (*spatial, C) become PyTorch's columns (C, *spatial)."""
    n_in, n_out = (int(d) for d in shape)
    if source is None or source[-1] == 1 or int(np.prod(source[:-1])) == 1:
        return (n_out, n_in), (lambda a: a.T), (lambda a: a.T)
    spatial, c = tuple(source[:-1]), source[-1]

    def to_c(a: np.ndarray) -> np.ndarray:  # rows (*spatial, C) -> columns (C, *spatial)
        return np.moveaxis(a.T.reshape(n_out, *spatial, c), -1, 1).reshape(n_out, n_in)

    def from_c(a: np.ndarray) -> np.ndarray:
        return np.moveaxis(a.reshape(n_out, c, *spatial), 1, -1).reshape(n_out, n_in).T

    return (n_out, n_in), to_c, from_c


def flatten_rows(columns: np.ndarray, n_in: int, source: Optional[tuple[int, ...]]) -> np.ndarray:
    """The Keras kernel rows (ascending) of a Dense layer fed by a Flatten of ``source`` that
    hold the canonical input ``columns`` (``c * HW + s`` -> row ``s * C + c``)."""
    if source is None or source[-1] == 1 or int(np.prod(source[:-1])) == 1:
        return columns
    row_of_column = np.arange(n_in).reshape(-1, source[-1]).T.reshape(-1)
    return np.sort(row_of_column[columns])
