"""The split of a source that has no test set of its own: fixed, seeded and stratified.

Class ``c`` with ``n`` examples (in the source's order) gives ``k = floor(fraction * n + 0.5)``
of them to the test set, at least 1 and at most ``n - 1`` when ``n >= 2`` (a class of one
example stays in training): the first ``k`` of
``numpy.random.default_rng([SPLIT_SEED, c]).permutation(n)``. Both parts keep the source's
order. The seed is fixed (not the run's ``--seed``), so every run tests on the same examples.
"""

from __future__ import annotations

import numpy as np

from .ref import SPLIT_SEED

__all__ = ["stratified_split"]


def stratified_split(labels: np.ndarray, fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), each ascending, of examples labelled ``labels``.

    >>> tr, te = stratified_split(np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]), 0.2)
    >>> len(tr), len(te), sorted(np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])[te].tolist())
    (8, 2, [0, 1])
    """
    labels = np.asarray(labels, dtype=np.int64)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = len(members)
        k = int(np.floor(fraction * n + 0.5))
        k = min(max(k, 1), n - 1) if n >= 2 else 0
        pick = np.random.default_rng([int(seed), int(c)]).permutation(n)[:k]
        test[members[pick]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)
