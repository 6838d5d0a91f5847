"""``prune auto AMOUNT of=macs``: how many filters each dependency group loses so that the
model keeps ``1 - AMOUNT`` of its multiply-accumulates. Pure numpy, so every backend removes the
same filters from the same weights.

**MACs** (:class:`MacModel`): of one input, through every conv and linear layer, dense: a
layer's weight count times its output positions (:meth:`lwdsl.backend.Backend.positions`),
the count :func:`lwdsl.runner.metrics.macs` reports once the filters are gone. A group that
loses ``r`` channels shortens, for each of its members, the member's axis by ``r * block``
(the filters of an ``out`` member, the input columns of an ``in`` member); a layer's weight
count is its shape with those two axes shortened. ``of=flops`` counts ``2 x`` MACs: the same
share, the same choice.

**Which filters** (:func:`removal_state`): each group loses its ``r`` lowest-scored channels by
:func:`lwdsl.semantics.groups.group_scores` (L1, p=1) on the weights as they are, the channels
``prune l1 R structured=filters remove=true`` removes. The measured model is the baseline with
the input columns of every member of a group zeroed at its lost channels: a channel no consumer
reads changes no output, so its accuracy is the accuracy of the model with the filters removed.
The backend then removes the groups one at a time in reverse model order: a removal shortens
the rows of the groups after it only, so every group is still scored on the weights it was
measured with.

**Search** (:func:`search_removal`): from nothing removed, each round measures, for every group
that can still lose a channel (at least one is always kept), the model with that group
shortened by the fewest channels that save at least ``quantum = ceil((MACs - target) /
SEARCH_STEPS)`` MACs (all it has left when fewer do), and takes the one with the lowest loss
(rounded to 1e-4; ties: model order): equal savings, compared on the loss. Rounds repeat until
the MACs are at most the target. Then channels are put back one at a time, each time to the
group whose channel adds the most MACs while the total stays at most the target, until none
fits: the kept MACs end at most the target, and no channel of a shortened group fits back.

**Exchanges** (:func:`exchange_removal`): from the better of the search and the uniform ratio
(by :func:`lwdsl.semantics.allocation.score`), for each share ``f`` of :data:`EXCHANGE_SHARES`:
every ordered pair of groups (i, j) gives the allocation where i loses ``max(1, round(f *
channels_i))`` more channels and j gets back as many as then fit under the target (at least
one, else the pair is skipped); all are measured and the best is taken when it answers at
least :data:`~lwdsl.semantics.allocation.AUTO_MARGIN` more probe images right at a loss no
higher (:func:`lwdsl.semantics.allocation.better`); repeated at the same share until none is,
then the next share, within :data:`EXCHANGE_BUDGET` measurements; then the fill-back above again.

**Uniform** (:func:`uniform_removal`): every group loses ``round_half_even(r * channels)``
(at most ``channels - 1``), the least ``r`` (64 bisections) at which the MACs are at most the
target: the per-layer ratios the search is compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from . import masks as M
from .groups import AXIS, Group, group_scores

__all__ = ["EXCHANGE_SHARES", "EXCHANGE_BUDGET", "exchange_removal", "fill_back", "SEARCH_STEPS", "MacModel", "removal_state", "uniform_removal", "Step", "search_removal", "eligible_groups"]

#: The search reaches the target in about this many steps of equal MAC savings.
SEARCH_STEPS = 24
#: Exchanges move this share of a group's channels, largest first.
EXCHANGE_SHARES = (0.25, 0.12, 0.06, 0.03)
#: At most this many allocations measured by the exchanges.
EXCHANGE_BUDGET = 150


def eligible_groups(groups: Sequence[Group], selected: Sequence[str]) -> tuple[list[Group], list[str]]:
    """(the groups ``prune auto of=macs`` may shorten, a line for each selected layer it leaves
    whole): a group is eligible when it can be pruned, all its producers are selected and it
    has at least two channels."""
    wanted, chosen, left = set(selected), [], []
    for g in groups:
        hit = [p for p in g.producers if p in wanted]
        if not hit:
            continue
        if g.reason:
            left += [f"{p}: {g.reason}" for p in hit]
        elif len(hit) < len(g.producers):
            left += [f"{p}: coupled to {', '.join(q for q in g.producers if q not in wanted)}, not selected" for p in hit]
        elif g.channels < 2:
            left += [f"{p}: one channel" for p in hit]
        else:
            chosen.append(g)
    return chosen, left


class MacModel:
    """Dense MACs of the model as a function of the channels each group loses."""

    def __init__(self, groups: Sequence[Group], shapes: Mapping[str, Sequence[int]], positions: Mapping[str, int]):
        self.groups = list(groups)
        self.shapes = {name: tuple(int(d) for d in shapes[name]) for name in positions if name in shapes}
        self.positions = {name: int(positions[name]) for name in self.shapes}
        # per (layer, axis): [(group index, columns per channel)]
        self.cuts: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for gi, g in enumerate(self.groups):
            for m in g.members:
                if m.layer in self.shapes:
                    self.cuts.setdefault((m.layer, AXIS[m.role]), []).append((gi, int(m.block)))

    def layer(self, name: str, removed: Sequence[int]) -> int:
        """One layer's MACs with ``removed[i]`` channels gone from group ``i``."""
        dims = list(self.shapes[name])
        for axis in (0, 1):
            if axis < len(dims):
                dims[axis] -= sum(int(removed[gi]) * block for gi, block in self.cuts.get((name, axis), ()))
        return int(math.prod(dims)) * self.positions[name]

    def total(self, removed: Sequence[int]) -> int:
        return sum(self.layer(name, removed) for name in self.shapes)

    @property
    def baseline(self) -> int:
        return self.total([0] * len(self.groups))


def removal_state(
    state: Mapping[str, np.ndarray], groups: Sequence[Group], removed: Sequence[int]
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """(the state with every group's lost channels unread, each group's keep vector): see
    the module doc. ``state`` holds canonical weights (``{layer}.weight``); it is not changed."""
    out = dict(state)
    keeps = []
    for g, r in zip(groups, removed):
        keep = np.ones(g.channels, dtype=bool)
        if r:
            keep = M.prune_lowest(group_scores(g, lambda n: state[f"{n}.weight"], 1.0), int(r))
            gone = np.flatnonzero(~keep)
            for m in g.members:
                if m.role != "in":
                    continue
                key = f"{m.layer}.weight"
                w = np.array(out[key], dtype=np.float32, copy=True)
                cols = m.positions(gone)
                w2 = w.reshape(w.shape[0], w.shape[1], -1) if w.ndim > 2 else w.reshape(w.shape[0], w.shape[1], 1)
                w2[:, cols, :] = 0.0
                out[key] = w2.reshape(w.shape)
        keeps.append(keep)
    return out, keeps


def uniform_removal(groups: Sequence[Group], macs: MacModel, target: int) -> tuple[float, tuple[int, ...]]:
    """(the ratio, each group's removed count) of the uniform rule (module doc).

    Raises:
        ValueError: the target is not reached even with one channel left in every group."""

    def counts(r: float) -> tuple[int, ...]:
        return tuple(min(M.count_to_prune(r, g.channels), g.channels - 1) for g in groups)

    if macs.total(counts(1.0)) > target:
        raise ValueError("unreachable")
    lo, hi = 0.0, 1.0
    if macs.total(counts(0.0)) <= target:
        return 0.0, counts(0.0)
    for _ in range(64):
        mid = (lo + hi) / 2
        if macs.total(counts(mid)) <= target:
            hi = mid
        else:
            lo = mid
    return hi, counts(hi)


@dataclass(frozen=True)
class Step:
    """One search step: the group shortened, by how many channels, and after it the MACs,
    accuracy and loss on the probe images."""

    group: int
    channels: int
    macs: int
    accuracy: float
    loss: float


def search_removal(
    groups: Sequence[Group],
    macs: MacModel,
    target: int,
    measure: Callable[[tuple[int, ...]], tuple[float, float]],
    at_start: Optional[tuple[float, float]] = None,
) -> tuple[tuple[int, ...], list[Step], int]:
    """(each group's removed count, the steps taken, how many models were measured): the
    greedy search and the fill-back of the module doc. ``measure(removed) -> (accuracy, loss)``.

    Raises:
        ValueError: the target is not reached even with one channel left in every group.

    >>> from lwdsl.semantics.groups import Member, Group
    >>> gs = [Group(4, (Member("a", "out"), Member("b", "in"))), Group(4, (Member("b", "out"),))]
    >>> mm = MacModel(gs, {"a": (4, 1), "b": (4, 4)}, {"a": 1, "b": 1})
    >>> removed, steps, n = search_removal(gs, mm, 10, lambda r: (1.0, 0.1 * r[0] + 0.2 * r[1]))
    >>> removed, mm.total(removed) <= 10
    ((2, 0), True)
    """
    limit = tuple(g.channels - 1 for g in groups)
    if macs.total(limit) > target:
        raise ValueError("unreachable")
    removed = [0] * len(groups)
    acc, loss = at_start if at_start is not None else measure(tuple(removed))
    now = macs.total(removed)
    steps: list[Step] = []
    measured = 0
    quantum = max(1, math.ceil((now - target) / SEARCH_STEPS))
    while now > target:
        best = None
        for gi, g in enumerate(groups):
            if removed[gi] >= limit[gi]:
                continue
            trial = list(removed)
            while trial[gi] < limit[gi]:
                trial[gi] += 1
                if now - macs.total(trial) >= quantum:
                    break
            after = macs.total(trial)
            if after >= now:
                continue
            a, lo = measure(tuple(trial))
            measured += 1
            key = round(lo, 4)
            if best is None or key < best[0]:
                best = (key, gi, trial[gi] - removed[gi], after, a, lo)
        if best is None:  # cannot happen when the limit meets the target
            raise ValueError("unreachable")
        _, gi, b, now, acc, loss = best
        removed[gi] += b
        steps.append(Step(gi, b, now, float(acc), float(loss)))
    removed = list(fill_back(removed, macs, target))
    return tuple(removed), steps, measured


def fill_back(removed: Sequence[int], macs: MacModel, target: int) -> tuple[int, ...]:
    """Channels put back one at a time, each to the group whose channel adds the most MACs while
    the total stays at most ``target``, until none fits (ties: model order).

    >>> from lwdsl.semantics.groups import Member, Group
    >>> mm = MacModel([Group(4, (Member("a", "out"),))], {"a": (4, 3)}, {"a": 1})
    >>> fill_back((3,), mm, 7)
    (2,)
    """
    removed = [int(r) for r in removed]
    while True:
        fits = []
        for gi in range(len(removed)):
            if removed[gi] > 0:
                trial = list(removed)
                trial[gi] -= 1
                after = macs.total(trial)
                if after <= target:
                    fits.append((-after, gi))
        if not fits:
            return tuple(removed)
        removed[min(fits)[1]] -= 1


def exchange_removal(
    groups: Sequence[Group],
    macs: MacModel,
    target: int,
    start: Sequence[int],
    measure: Callable[[tuple[int, ...]], tuple[float, float]],
    images: int,
    at_start: tuple[float, float],
    shares: Sequence[float] = EXCHANGE_SHARES,
    budget: int = EXCHANGE_BUDGET,
    margin: Optional[int] = None,
) -> tuple[tuple[int, ...], list[tuple[int, int, tuple[int, ...], float, float]], int]:
    """(the removed counts, the exchanges taken as (i, j, counts after, accuracy, loss), how many
    allocations were measured): see the module doc. Every allocation it returns keeps at most
    ``target`` MACs when ``start`` does.

    >>> from lwdsl.semantics.groups import Member, Group
    >>> gs = [Group(4, (Member("a", "out"),)), Group(4, (Member("b", "out"),))]
    >>> mm = MacModel(gs, {"a": (4, 1), "b": (4, 1)}, {"a": 1, "b": 1})
    >>> removed, moves, n = exchange_removal(gs, mm, 4, (2, 2), lambda r: (0.1 * r[0], 0.0), 10, (0.2, 0.0), margin=1)
    >>> removed, mm.total(removed)
    ((3, 1), 4)
    """
    from .allocation import AUTO_MARGIN, better, score

    margin = AUTO_MARGIN if margin is None else int(margin)
    limit = tuple(g.channels - 1 for g in groups)
    removed = tuple(int(r) for r in start)
    best = score(*at_start, images)
    acc, loss = at_start
    taken: list[tuple[int, int, tuple[int, ...], float, float]] = []
    measured = 0
    for share in shares:
        while True:
            options = []
            for i, gi in enumerate(groups):
                take = min(max(1, int(round(share * gi.channels))), limit[i] - removed[i])
                if take <= 0:
                    continue
                for j in range(len(groups)):
                    if j == i or removed[j] == 0:
                        continue
                    trial = list(removed)
                    trial[i] += take
                    back = 0
                    while trial[j] > 0:
                        trial[j] -= 1
                        if macs.total(trial) > target:
                            trial[j] += 1
                            break
                        back += 1
                    if back:
                        options.append((i, j, tuple(trial)))
            if not options or measured + len(options) > budget:
                break
            found = None
            for i, j, trial in options:
                a, lo = measure(trial)
                measured += 1
                key = score(a, lo, images)
                if better(key, best, margin) and (found is None or key < found[0]):
                    found = (key, i, j, trial, a, lo)
            if found is None:
                break
            best, i, j, removed, acc, loss = found
            taken.append((i, j, removed, float(acc), float(loss)))
        if measured >= budget:
            break
    return removed, taken, measured
