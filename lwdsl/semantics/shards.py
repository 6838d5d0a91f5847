"""Who sees what when a training step runs on several ranks: one framework-free rule.

A run on ``world`` ranks sees exactly the global batches of a one-process run
(:func:`lwdsl.semantics.order.batches`: same examples, same order). Each global batch of
``size`` examples is cut into ``world`` **contiguous** shards, in rank order, the first
``size % world`` shards one example longer than the others (``numpy.array_split``'s cut):
rank ``r`` takes ``batch[lo:hi]`` with ``(lo, hi) =`` :func:`shard_bounds`. Concatenating the
shards in rank order gives the batch back. A short final batch (or a batch smaller than the
world) leaves the last ranks with zero examples; they still take part in every collective.

Each rank's loss is its shard's mean loss times :func:`shard_weight` (``count / size``), so the
ranks' losses sum to the batch's mean loss; the gradients are then **summed** over the ranks.
The result is, by construction, the gradient one process gets by running the shards one after
another and accumulating their gradients in rank order (``g0 + g1 + ...``); on two ranks the sum
of a collective is that sum bit for bit (addition of two numbers commutes). Random layers
(dropout) draw, for each shard, from a generator seeded by :func:`shard_seed` (the step, the
optimizer step, the shard), never from a per-rank generator.

Ranks must hold the same masks and codes after every step: each rank hashes its model
(:func:`digest`) and one all-reduce of :func:`agree_words` (MAX) tells whether any differs
(:func:`agreed`).

>>> [shard_bounds(5, 2, r) for r in range(2)]
[(0, 3), (3, 5)]
>>> [shard_bounds(1, 3, r) for r in range(3)]
[(0, 1), (1, 1), (1, 1)]
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Optional

import numpy as np

__all__ = ["shard_bounds", "shard", "shard_weight", "shard_seed", "workers_problem", "digest", "agree_words", "agreed",
           "DIGEST_WORDS"]

#: The digest is compared as this many 16-bit words (64 bits of SHA-256).
DIGEST_WORDS = 4


def shard_bounds(size: int, world: int, rank: int) -> tuple[int, int]:
    """``(lo, hi)``: rank ``rank``'s slice of a global batch of ``size`` examples on ``world``
    ranks (contiguous; the first ``size % world`` ranks take one example more).

    Raises:
        ValueError: ``world < 1`` or ``rank`` not in ``range(world)``.
    """
    size, world, rank = int(size), int(world), int(rank)
    if world < 1 or not 0 <= rank < world or size < 0:
        raise ValueError(f"no shard {rank} of a batch of {size} on {world} rank(s)")
    q, m = divmod(size, world)
    lo = rank * q + min(rank, m)
    return lo, lo + q + (1 if rank < m else 0)


def shard(batch: np.ndarray, world: int, rank: int) -> np.ndarray:
    """Rank ``rank``'s examples of the global ``batch`` (its indices, in the batch's order).

    >>> shard(np.array([7, 3, 9, 1, 4]), 2, 1).tolist()
    [1, 4]
    """
    lo, hi = shard_bounds(len(batch), world, rank)
    return batch[lo:hi]


def shard_weight(count: int, size: int) -> float:
    """What a shard's mean loss is multiplied by: ``count / size`` (its share of the global
    batch), so the ranks' losses add up to the batch's mean loss. 0.0 for an empty shard."""
    return float(count) / float(size) if size else 0.0


def shard_seed(step_seed: int, t: int, rank: int) -> int:
    """The seed random layers (dropout) draw from for shard ``rank`` of optimizer step ``t``
    (0-based) of the training step seeded ``step_seed``: the same on one process accumulating
    the shards as on the ranks, whatever the process computing a shard."""
    return int(np.random.SeedSequence([int(step_seed), int(t), int(rank)]).generate_state(1)[0])


def workers_problem(workers: int, examples: int) -> Optional[str]:
    """Why ``workers`` ranks cannot train on ``examples`` training examples (None when they
    can): fewer than one, or more ranks than examples (a rank that never sees an example)."""
    if workers < 1:
        return f"--workers {workers}: a run needs at least 1 worker"
    if workers > examples:
        return f"--workers {workers} is more than the {examples} training example(s): some worker would never see one"
    return None


def digest(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The digest of named arrays (names sorted; each name, dtype, shape and bytes) as
    :data:`DIGEST_WORDS` int64 words of 16 bits each."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    raw = np.frombuffer(h.digest()[: 2 * DIGEST_WORDS], dtype="<u2")
    return raw.astype(np.int64)


def agree_words(words: np.ndarray) -> np.ndarray:
    """What a rank puts into the one MAX all-reduce that compares digests: ``[w, -w]``."""
    w = np.asarray(words, dtype=np.int64)
    return np.concatenate([w, -w])


def agreed(reduced: np.ndarray) -> bool:
    """Whether every rank gave the same words, from the MAX all-reduce of :func:`agree_words`:
    the largest word equals the smallest (minus the largest negated) in every place."""
    r = np.asarray(reduced, dtype=np.int64)
    half = len(r) // 2
    return bool(np.array_equal(r[:half], -r[half:]))
