"""Automatic pruning levels: the numbers of ``prune auto`` and ``prune ... amount=auto``.

Pure numpy and Python, so every backend makes the same choice from the same measurements.

**Probe images** (:func:`probe_indices`): a sensitivity is measured on ``min(count, n)``
images of a split, the first of ``numpy.random.default_rng([seed, 2]).permutation(n)`` (a
stream neither training nor calibration draws), sorted.

**Drop curves.** A layer's sensitivity to pruning is the accuracy in points (percent) of the
model with only that layer pruned to each amount of a grid, on the probe images. Its *drop* at
amount ``a`` is ``100 * (baseline accuracy - accuracy at a)``. :func:`envelope` makes it a
non-decreasing curve over ``[0, grid top]``: the point ``(0, 0)`` first, then at each grid
amount the largest drop measured at that amount or below, at least 0, plus a tilt of
:data:`TILT` points per unit of amount (``0.001`` points at 100%: far below the 0.01-point
resolution of 10,000 images, it only orders equal drops and makes the curve strictly
increasing); the curve is linear between grid amounts.

**prune auto AMOUNT** over layers of ``n_i`` weights: the whole selection loses exactly ``K =
round_half_even(AMOUNT * sum n_i)`` weights, and the counts per layer are chosen on the probe
images (the training split; the test set chooses nothing). Three allocations of ``K``:
*global* (:func:`global_counts`: the counts of the global magnitude cut, ``prune global l1``),
*uniform* (:func:`uniform_counts`) and *sensitivity* (:func:`allocate`, below), each measured
(accuracy and loss with every layer pruned by the magnitude rule at its count). The start is
global unless another answers at least :data:`AUTO_MARGIN` more probe images right at a loss
no higher (:func:`better`; checked in that order). Then :func:`refine` moves blocks of weights
between layers while a move is that clearly better. Why not the threshold allocation alone:
it lost to the global cut at every amount measured (docs/semantics.md); moves that a few
images favour but the loss does not were seen to lose test accuracy, hence the margin and the
loss condition. The answer is the global cut unless the probe clearly says otherwise.

**Sensitivity allocation** (:func:`allocate`): the
whole selection loses exactly ``K = round_half_even(AMOUNT * sum n_i)`` weights. Every layer
is given the largest amount ``a_i(t) <= cap`` whose curve is at most a common threshold ``t``
(the inverse of the curve, linear between grid amounts; the cap is the grid's top, 98% for
``prune auto``). ``sum n_i * a_i(t)`` grows continuously with ``t``, so ``t*``, the least
``t`` where it reaches ``K``, is found by bisection (200 halvings of ``[0, the largest curve
value]`` in float64, keeping the upper end). Counts: ``k_i = floor(n_i * a_i(t*))``, then
the ``K - sum k_i`` weights left go one each to the layers with the largest fractional parts
``n_i * a_i(t*) - k_i`` (ties: model order). Layer ``i`` is then pruned by the magnitude rule
at ``k_i / n_i`` (exactly ``k_i`` weights). A layer that is equally insensitive as another is
pruned to the same amount; more weights go where a measured drop comes later.

**Level search** (:func:`level_search`), ``prune METHOD amount=auto drop=D``: levels are
tried one after another, each from the same model; a level is *within* when its accuracy
after pruning (and ``epochs`` of fine-tuning) is at most ``D`` points below the baseline's.
The first level is :data:`LEVEL_START` (50%), the step :data:`LEVEL_STEP` (10%). After each
level the direction is up when it was within, down when not; when the direction changes, the
step is halved first; a step below :data:`LEVEL_MIN_STEP` (2.5%) ends the search. A level at
or beyond 0% or 100% is never tried: its step is halved instead (same stop rule). A level
met again is not measured again: its first result is used. The answer is the highest level
that was within (None when none was). Levels are kept as integers of
1/10,000 so that no float drift changes a level (50% + 10% is exactly 60%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .auto_grid import AUTO_GRID  # the amounts prune auto measures at (its cap is the last)
from .masks import count_to_prune

__all__ = [
    "TILT",
    "AUTO_GRID",
    "AUTO_SAMPLES",
    "LEVEL_START",
    "LEVEL_STEP",
    "LEVEL_MIN_STEP",
    "probe_indices",
    "envelope",
    "amount_at",
    "Allocation",
    "allocate",
    "LevelTry",
    "level_search",
    "AUTO_MOVES",
    "AUTO_BUDGET",
    "AUTO_MARGIN",
    "better",
    "score",
    "spread",
    "uniform_counts",
    "global_counts",
    "Candidate",
    "Move",
    "Refined",
    "refine",
]

#: Points of drop added per unit of amount: orders equal drops (see the module doc).
TILT = 1e-3
#: Training images ``prune auto`` measures sensitivity on and compares allocations on.
AUTO_SAMPLES = 2000
#: The exchange search's block sizes, as fractions of the count pruned, largest first.
AUTO_MOVES = (0.08, 0.04, 0.02, 0.01, 0.005)
#: An allocation replaces the current one only when it answers at least this many more probe
#: images right (0.25 points of 2000): smaller gains are within the probe's noise.
AUTO_MARGIN = 5
#: At most this many allocations are evaluated by the exchange search (the start's excluded).
AUTO_BUDGET = 400
#: Level search: first level, first step and the step below which it stops (fractions).
LEVEL_START, LEVEL_STEP, LEVEL_MIN_STEP = 0.5, 0.1, 0.025
_UNIT = 10_000  # levels are integers of 1/_UNIT
_HALVINGS = 200


def probe_indices(n: int, count: int, seed: int) -> np.ndarray:
    """The images a sensitivity is measured on: the first ``min(count, n)`` of
    ``default_rng([seed, 2]).permutation(n)``, sorted.

    >>> probe_indices(10, 3, 0).tolist() == sorted(probe_indices(10, 3, 0).tolist())
    True
    """
    return np.sort(np.random.default_rng([int(seed), 2]).permutation(int(n))[: min(int(count), int(n))])


def envelope(amounts: Sequence[float], drops: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): the strictly increasing drop curve of one layer (see the module doc), with the
    point (0, 0) first. ``amounts`` ascending in (0, 1), ``drops`` in points at each.

    >>> x, y = envelope([0.5, 0.9], [1.0, 0.5])
    >>> x.tolist(), [round(float(v), 4) for v in y]
    ([0.0, 0.5, 0.9], [0.0, 1.0005, 1.0009])
    """
    a = np.asarray(amounts, dtype=np.float64)
    if a.ndim != 1 or len(a) != len(drops) or not len(a) or np.any(np.diff(a) <= 0) or a[0] <= 0 or a[-1] >= 1:
        raise ValueError(f"amounts must ascend strictly inside (0, 1), one drop each; got {list(amounts)}")
    d = np.maximum.accumulate(np.maximum(np.asarray(drops, dtype=np.float64), 0.0))
    x = np.concatenate([[0.0], a])
    return x, np.concatenate([[0.0], d]) + TILT * x


def amount_at(t: float, x: np.ndarray, y: np.ndarray) -> float:
    """The largest amount whose curve ``(x, y)`` (from :func:`envelope`) is at most ``t``: the
    curve's inverse, linear between its points, ``x[-1]`` (the cap) beyond its end.

    >>> x, y = envelope([0.5], [1.0])
    >>> amount_at(0.5, x, y) == 0.5 * 0.5 / (1.0 + TILT * 0.5)
    True
    """
    if t >= y[-1]:
        return float(x[-1])
    if t <= 0.0:
        return 0.0
    j = int(np.searchsorted(y, t, side="right"))  # y[j-1] <= t < y[j]
    x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
    return float(x0 + (x1 - x0) * (t - y0) / (y1 - y0))


@dataclass(frozen=True)
class Allocation:
    """``prune auto``'s answer: the threshold ``t*`` (points), each layer's pruned count and
    amount (``counts[i] / weights[i]``), and why (one line a layer)."""

    threshold: float
    counts: tuple[int, ...]
    amounts: tuple[float, ...]
    reasons: tuple[str, ...]


def allocate(target: float, weights: Sequence[int], amounts: Sequence[float], drops: Sequence[Sequence[float]]) -> Allocation:
    """Per-layer counts for ``prune auto target`` (see the module doc).

    Args:
        target: the fraction of all the layers' weights pruned, in [0, cap].
        weights: each layer's weight count, in model order.
        amounts: the grid (ascending, in (0, 1)); its last amount is every layer's cap.
        drops: per layer, the accuracy drop in points at each grid amount.

    Raises:
        ValueError: ``target`` above the cap, or inputs of different lengths.

    >>> a = allocate(0.5, [100, 100], [0.5, 0.9], [[0.0, 0.0], [5.0, 9.0]])
    >>> a.counts, sum(a.counts)
    ((90, 10), 100)
    """
    n = [int(w) for w in weights]
    if len(n) != len(drops) or not n:
        raise ValueError("one drop curve per layer, and at least one layer")
    curves = [envelope(amounts, d) for d in drops]
    cap = float(amounts[-1])
    if not 0.0 <= target <= cap:
        raise ValueError(f"target {target:g} is outside [0, {cap:g}] (each layer is capped at {cap:g})")
    k = count_to_prune(target, sum(n))

    def total(t: float) -> float:
        return sum(ni * amount_at(t, x, y) for ni, (x, y) in zip(n, curves))

    lo, hi = 0.0, max(float(y[-1]) for _, y in curves)
    if total(lo) >= k:
        hi = lo
    for _ in range(_HALVINGS):
        if hi - lo <= 0.0:
            break
        mid = lo + (hi - lo) / 2
        if mid in (lo, hi):
            break
        if total(mid) >= k:
            hi = mid
        else:
            lo = mid
    t = hi
    real = [ni * amount_at(t, x, y) for ni, (x, y) in zip(n, curves)]
    counts = [min(int(math.floor(r)), ni) for r, ni in zip(real, n)]
    left = k - sum(counts)
    order = sorted(range(len(n)), key=lambda i: (-(real[i] - counts[i]), i))
    for i in order:
        if left <= 0:
            break
        if counts[i] < n[i] and real[i] - counts[i] > 0:
            counts[i] += 1
            left -= 1
    for i in order:  # only when rounding left weights over (never seen): any layer with room
        if left <= 0:
            break
        if counts[i] < n[i]:
            counts[i] += 1
            left -= 1
    reasons = tuple(_reason(counts[i] / n[i] if n[i] else 0.0, t, amounts, drops[i], cap) for i in range(len(n)))
    return Allocation(t, tuple(counts), tuple(c / ni if ni else 0.0 for c, ni in zip(counts, n)), reasons)


def _reason(amount: float, t: float, grid: Sequence[float], drop: Sequence[float], cap: float) -> str:
    """One line: where the layer's curve meets the threshold."""
    pct = lambda v: f"{100 * v:.4g}%"  # noqa: E731
    pts = lambda v: f"{v:.2f} pt"  # noqa: E731
    if amount >= cap - 1e-9:
        return f"capped at {pct(cap)}: drop {pts(max(drop))} at most up to {pct(cap)}, within the threshold {pts(t)}"
    below = [(a, d) for a, d in zip(grid, drop) if a <= amount + 1e-12]
    above = [(a, d) for a, d in zip(grid, drop) if a > amount + 1e-12]
    seen = f"drop at most {pts(max(0.0, *(d for _, d in below)))} up to {pct(below[-1][0])}" if below else "no amount measured below"
    nxt = f"{pts(above[0][1])} at {pct(above[0][0])}" if above else "the cap"
    return f"{pct(amount)}: {seen}, {nxt}; threshold {pts(t)}"


@dataclass(frozen=True)
class LevelTry:
    """One level measured by :func:`level_search`: the level, whether it was within, the
    step the search took next (0 when it stopped there) and what the measure returned."""

    level: float
    within: bool
    next_step: float
    measured: object = None


def level_search(
    measure: Callable[[float], tuple[bool, object]],
    start: float = LEVEL_START,
    step: float = LEVEL_STEP,
    min_step: float = LEVEL_MIN_STEP,
) -> tuple[Optional[float], list[LevelTry]]:
    """(the highest level within, every level tried in order) of the step search (module doc).

    ``measure(level)`` -> (within, what to record): prunes to ``level`` from the same model,
    fine-tunes and compares with the drop allowed.

    >>> best, tried = level_search(lambda lv: (lv <= 0.72, None))
    >>> best, [t.level for t in tried]
    (0.7, [0.5, 0.6, 0.7, 0.8, 0.75, 0.725])
    """
    level, s, smin = round(start * _UNIT), round(step * _UNIT), min_step * _UNIT
    if not 0 < level < _UNIT or s <= 0:
        raise ValueError("the level search starts inside (0, 1) with a positive step")
    tried: list[LevelTry] = []
    known: dict[float, bool] = {}
    best: Optional[float] = None
    previous: Optional[int] = None
    while True:
        fresh = level not in known
        if fresh:
            known[level], measured = measure(level / _UNIT)
        within = known[level]
        direction = 1 if within else -1
        if within and (best is None or level > best):
            best = level
        if previous is not None and direction != previous:
            s = s / 2
        while s >= smin and not 0 < level + direction * s < _UNIT:
            s = s / 2
        stop = s < smin
        if fresh:
            tried.append(LevelTry(level / _UNIT, within, 0.0 if stop else s / _UNIT, measured))
        if stop:
            break
        previous = direction
        level = level + direction * s
    return (None if best is None else best / _UNIT), tried


# --- prune auto: candidates and the exchange search -------------------------------------------


def score(accuracy: float, loss: float, images: int) -> tuple[int, float]:
    """The key allocations are compared by, smaller is better: (minus the probe images
    answered right, the mean loss rounded to 1e-4). The count is exact on every backend; the
    loss, rounded, only breaks ties (float rounding differs between frameworks far below 1e-4).

    >>> score(0.9, 0.123456, 2000) < score(0.8995, 0.01, 2000)
    True
    """
    return (-int(round(float(accuracy) * int(images))), round(float(loss), 4))


def better(new: tuple[int, float], old: tuple[int, float], margin: int = AUTO_MARGIN) -> bool:
    """Whether the :func:`score` ``new`` replaces ``old``: at least ``margin`` more images right
    and a loss (rounded) no higher; both must agree, so that a gain of a few images the loss
    does not confirm (noise of the probe) is not taken.

    >>> better(score(0.9, 0.1, 1000), score(0.895, 0.1, 1000)), better(score(0.9, 0.3, 1000), score(0.895, 0.1, 1000))
    (True, False)
    """
    return -new[0] >= -old[0] + int(margin) and new[1] <= old[1]


def spread(k: int, real: Sequence[float], sizes: Sequence[int]) -> tuple[int, ...]:
    """Integer counts summing to ``k`` from real ones: ``floor`` of each, then one each to the
    largest fractional parts (ties: model order), never above a layer's size.

    >>> spread(5, [1.5, 1.5, 2.0], [10, 10, 10])
    (2, 1, 2)
    """
    counts = [min(int(math.floor(r)), int(n)) for r, n in zip(real, sizes)]
    left = int(k) - sum(counts)
    order = sorted(range(len(counts)), key=lambda i: (-(real[i] - counts[i]), i))
    while left > 0:
        moved = False
        for i in order:
            if left <= 0:
                break
            if counts[i] < sizes[i]:
                counts[i] += 1
                left -= 1
                moved = True
        if not moved:
            raise ValueError(f"{k} does not fit in layers of {list(sizes)}")
    return tuple(counts)


def uniform_counts(k: int, sizes: Sequence[int]) -> tuple[int, ...]:
    """Every layer the same share ``k / sum(sizes)``, the counts by :func:`spread`.

    >>> uniform_counts(7, [10, 4])
    (5, 2)
    """
    total = sum(int(n) for n in sizes)
    return spread(k, [k * int(n) / total if total else 0.0 for n in sizes], sizes)


def global_counts(weights: Sequence[np.ndarray], k: int) -> tuple[int, ...]:
    """Each layer's count under the global magnitude cut of ``k`` weights over ``weights``
    (:func:`lwdsl.semantics.masks.magnitude_cut`: the ``prune global l1`` masks).

    >>> global_counts([np.array([0.1, 5.0], np.float32), np.array([0.2, 0.3], np.float32)], 2)
    (1, 1)
    """
    from .masks import magnitude_cut

    cut = magnitude_cut(weights, int(k))
    if not cut.pruned:
        return (0,) * len(weights)
    return tuple(int(np.size(w) - np.count_nonzero(cut.keep_mask(i, np.asarray(w)))) for i, w in enumerate(weights))


@dataclass(frozen=True)
class Candidate:
    """One allocation measured on the probe images: its name, counts, accuracy and loss."""

    name: str
    counts: tuple[int, ...]
    accuracy: float
    loss: float


@dataclass(frozen=True)
class Move:
    """One accepted exchange: ``weights`` pruned fewer in layer ``spared``, more in ``pruned``,
    and the accuracy and loss after it."""

    spared: int
    pruned: int
    weights: int
    accuracy: float
    loss: float


@dataclass(frozen=True)
class Refined:
    """The exchange search's answer: the counts, the moves accepted in order, how many
    allocations it evaluated, and its final accuracy and loss."""

    counts: tuple[int, ...]
    moves: tuple[Move, ...]
    evaluated: int
    accuracy: float
    loss: float


def refine(
    start: Sequence[int],
    caps: Sequence[int],
    measure: Callable[[tuple[int, ...]], tuple[float, float]],
    images: int,
    at_start: Optional[tuple[float, float]] = None,
    moves: Sequence[float] = AUTO_MOVES,
    budget: int = AUTO_BUDGET,
    margin: int = AUTO_MARGIN,
) -> Refined:
    """Move pruned weights between layers while the probe improves, the total kept exact.

    From ``start``, for each block size ``b = max(1, round(f * sum(start)))`` of ``moves``:
    every ordered pair of layers (i, j), i != j, gives the allocation with ``m = min(b,
    counts[i], caps[j] - counts[j])`` (when > 0) weights pruned fewer in i and more in j; all of
    them are measured (``measure(counts) -> (accuracy, loss)``), and the best by :func:`score`
    (ties: the first pair in (i, j) order) is accepted when it answers at least ``margin`` more
    probe images right than the current one at a loss no higher (:func:`better`); the round repeats at the same size until no pair improves, then the next size.
    It stops there, or before a round that would measure more than ``budget`` allocations in
    all.

    >>> best = refine((2, 2), (4, 4), lambda c: (1.0 - 0.1 * c[1], 0.0), 10, moves=(0.5,), margin=1)
    >>> best.counts, [(m.spared, m.pruned, m.weights) for m in best.moves]
    ((4, 0), [(1, 0, 2)])
    """
    counts = tuple(int(c) for c in start)
    caps = tuple(max(int(c), int(k)) for c, k in zip(caps, counts))
    acc, loss = at_start if at_start is not None else measure(counts)
    best = score(acc, loss, images)
    total, layers = sum(counts), len(counts)
    accepted: list[Move] = []
    evaluated = 0
    for frac in moves:
        block = max(1, int(round(frac * total)))
        while True:
            options = []
            for i in range(layers):
                for j in range(layers):
                    if i == j:
                        continue
                    m = min(block, counts[i], caps[j] - counts[j])
                    if m > 0:
                        c = list(counts)
                        c[i] -= m
                        c[j] += m
                        options.append((i, j, m, tuple(c)))
            if not options or evaluated + len(options) > budget:
                break
            found = None
            for i, j, m, c in options:
                a, lo = measure(c)
                evaluated += 1
                key = score(a, lo, images)
                if better(key, best, margin) and (found is None or key < found[0]):
                    found = (key, i, j, m, c, a, lo)
            if found is None:
                break
            best, i, j, m, counts, acc, loss = found
            accepted.append(Move(i, j, m, float(acc), float(loss)))
        if evaluated >= budget:
            break
    return Refined(counts, tuple(accepted), evaluated, float(acc), float(loss))
