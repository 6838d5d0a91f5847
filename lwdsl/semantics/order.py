"""The order training visits the data in: one framework-free definition for every backend.

Both backends draw the same permutation, so fine-tuning from identical weights sees identical
batches and gives the same losses up to floating-point rounding. An epoch visits all ``n``
examples in the order ``numpy.random.default_rng(seed + epoch).permutation(n)``, cut into
batches of ``batch`` (the last one smaller when ``batch`` does not divide ``n``, as a PyTorch
DataLoader with ``drop_last=False``); an epoch has ``ceil(n / batch)`` optimizer steps.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["epoch_order", "steps_per_epoch", "batches", "calibration_indices"]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(n)`` visited in ``epoch`` (0-based) of a run seeded ``seed``.

    >>> epoch_order(5, 0, 0).tolist() == epoch_order(5, 0, 0).tolist()
    True
    """
    return np.random.default_rng(int(seed) + int(epoch)).permutation(int(n))


def steps_per_epoch(n: int, batch: int) -> int:
    """Optimizer steps in one epoch: ``ceil(n / batch)``."""
    return -(-int(n) // int(batch))


def batches(n: int, batch: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """The index arrays of the batches of ``epoch``, in order."""
    order = epoch_order(n, seed, epoch)
    for start in range(0, int(n), int(batch)):
        yield order[start : start + batch]


def calibration_indices(n: int, count: int, seed: int) -> np.ndarray:
    """The training examples static quantization calibrates on: the first ``min(count, n)`` of
    the permutation drawn by ``numpy.random.default_rng([seed, 1]).permutation(n)`` (a stream
    no training epoch uses), sorted.

    >>> calibration_indices(10, 4, 0).size
    4
    """
    return np.sort(np.random.default_rng([int(seed), 1]).permutation(int(n))[: min(int(count), int(n))])
