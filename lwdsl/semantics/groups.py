"""Dependency groups for structured removal: channels that must go together, and which go.

Removing output channel ``i`` of a convolution is only possible if every tensor that carries
that channel loses it too: the BatchNorm after it, the depthwise convolution it feeds, the
other branch of a residual addition (and so every producer of that branch), the slice of a
concatenation it fills, the input columns of every consumer. Such a set of channels is a
:class:`Group`: ``channels`` positions shared by its :class:`Member` s, each a layer's weight
axis seen in the canonical (PyTorch) layout:

- ``out``: axis 0 of a convolution or linear layer (its filters; the bias goes with them);
- ``in``: axis 1 of a consumer, ``block`` columns per channel after a flatten (H*W);
- ``norm``: every per-channel vector of a normalization layer;
- ``depthwise``: a depthwise convolution (one filter per channel: axis 0, and its groups).

A backend translates its graph (torch.fx on PyTorch, the functional graph on Keras) into the
ops of :mod:`lwdsl.backend.channel_walk`, whose walk calls a :class:`GraphBuilder` and gets the
groups from :meth:`GraphBuilder.groups`; everything after that is decided here, in numpy, so
both backends remove the same channels:

- :func:`select_groups`: which groups a selection prunes (a group is pruned when its
  producers, its ``out`` members, are selected: all of them, or an error names the others);
  a group that cannot be pruned (it touches the model's input or output, an operation that
  needs all channels, ...) is refused with that reason, naming the layer.
- :func:`group_keep`: the kept channels of a group under a structured rule. The score of
  channel ``i`` is the Ln norm of the group's filters ``(sum_m sum |W_m[i]|^p)^(1/p)`` over its
  ``out`` members, summed in the order of their names (float64); a group of one producer
  therefore scores exactly as :func:`lwdsl.semantics.masks.structured_keep` does. ``k = round_half_even(AMOUNT *
  channels)`` lowest are pruned, ties lower index first (:func:`masks.prune_lowest`).
- :func:`axis_keeps`: per (layer, canonical axis) the kept indices, all groups applied.

The rules are written in docs/semantics.md ("Dependency groups").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..errors import LwdslError
from . import masks as M

__all__ = [
    "Member",
    "Group",
    "Channels",
    "GraphBuilder",
    "select_groups",
    "group_scores",
    "group_keep",
    "axis_keeps",
    "describe",
]

ROLES = ("out", "in", "norm", "depthwise")
#: the canonical axis each role slices (0: outputs / per-channel vectors, 1: inputs)
AXIS = {"out": 0, "in": 1, "norm": 0, "depthwise": 0}


@dataclass(frozen=True)
class Member:
    """One layer's share of a group: its ``role``, where the group starts on that layer's axis
    (``offset``, in channels: after a concatenation a consumer sees several groups side by
    side) and ``block`` columns per channel (H*W when a flatten comes between)."""

    layer: str
    role: str
    offset: int = 0
    block: int = 1

    def positions(self, channels: np.ndarray) -> np.ndarray:
        """Indices along the layer's canonical axis that the group's ``channels`` occupy."""
        channels = np.asarray(channels, dtype=np.int64)
        return ((self.offset + channels)[:, None] * self.block + np.arange(self.block)).reshape(-1)


@dataclass(frozen=True)
class Group:
    """Channels that are removed together. ``reason`` says why the group cannot be pruned
    (None: it can); ``via`` the couplings that made it (``a residual addition``, ...)."""

    channels: int
    members: tuple[Member, ...]
    reason: Optional[str] = None
    via: tuple[str, ...] = ()

    @property
    def producers(self) -> list[str]:
        """The layers whose filters (``out``) are the group's channels, in model order."""
        return [m.layer for m in self.members if m.role == "out"]

    @property
    def name(self) -> str:
        """The first producer in model order (``inputs of L`` for a group without one, such as
        the model's input): names the group in messages."""
        if self.producers:
            return self.producers[0]
        return f"inputs of {self.members[0].layer}" if self.members else "(no layer)"


#: a tensor's channel axis as the groups laid side by side along it (a concatenation has
#: several), with the columns per channel (``block``: H*W after a flatten)
@dataclass(frozen=True)
class Channels:
    ids: tuple[int, ...]
    block: int = 1


@dataclass
class _Space:
    size: int
    reason: Optional[str] = None
    via: list[str] = field(default_factory=list)


class GraphBuilder:
    """Collects groups while :mod:`lwdsl.backend.channel_walk` walks a graph in topological order.

    Lifecycle: call :meth:`space` for every tensor whose channels start somewhere (the model's
    input, a convolution's output, anything lwdsl cannot follow), :meth:`member` for every
    layer a tensor's channels touch, :meth:`same` where two tensors must carry the same
    channels (an addition), :meth:`concat` for a concatenation along channels,
    :meth:`refuse` where channels cannot change (the model's output, an unknown operation);
    then :meth:`groups` once. A layer's axis met twice (a module called twice) joins its groups.
    """

    def __init__(self, order: Mapping[str, int]) -> None:
        self._order = dict(order)
        self._parent: list[int] = []
        self._spaces: list[_Space] = []
        self._members: list[tuple[int, Member]] = []

    def _find(self, i: int) -> int:
        while self._parent[i] != i:
            self._parent[i] = self._parent[self._parent[i]]
            i = self._parent[i]
        return i

    def space(self, size: int, reason: Optional[str] = None) -> Channels:
        """New channels of ``size`` (optionally unprunable for ``reason``)."""
        self._parent.append(len(self._parent))
        self._spaces.append(_Space(int(size), reason))
        return Channels((len(self._parent) - 1,))

    def size(self, ch: Channels) -> int:
        return sum(self._spaces[self._find(i)].size for i in ch.ids)

    def _union(self, a: int, b: int, via: str) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        sa, sb = self._spaces[ra], self._spaces[rb]
        self._parent[rb] = ra
        sa.reason = sa.reason or sb.reason
        sa.via = [*sa.via, *(v for v in sb.via if v not in sa.via)]
        if via not in sa.via:
            sa.via.append(via)

    def same(self, a: Channels, b: Channels, via: str) -> Channels:
        """``a`` and ``b`` carry the same channels (an addition, a multiplication): join them.
        Laid out differently (concatenations of other sizes) both are refused instead."""
        sizes_a = [self._spaces[self._find(i)].size for i in a.ids]
        sizes_b = [self._spaces[self._find(i)].size for i in b.ids]
        if sizes_a != sizes_b or a.block != b.block:
            why = f"{via} joins channels laid out differently on its two sides"
            self.refuse(a, why)
            self.refuse(b, why)
            return a
        for i, j in zip(a.ids, b.ids):
            self._union(i, j, via)
        return a

    def concat(self, parts: Sequence[Channels]) -> Channels:
        """The channels of a concatenation along the channel axis."""
        if any(p.block != 1 for p in parts):
            for p in parts:
                self.refuse(p, "a concatenation after a flatten")
        return Channels(tuple(i for p in parts for i in p.ids))

    def refuse(self, ch: Channels, reason: str) -> None:
        """The channels of ``ch`` cannot be removed, for ``reason`` (the first one given stays)."""
        for i in ch.ids:
            s = self._spaces[self._find(i)]
            s.reason = s.reason or reason

    def member(self, ch: Channels, layer: str, role: str) -> None:
        """``layer`` meets the channels of ``ch`` in ``role`` (see :class:`Member`)."""
        if role not in ROLES:
            raise ValueError(f"role {role!r} not in {ROLES}")
        offset = 0
        for i in ch.ids:
            self._members.append((i, Member(layer, role, offset, ch.block)))
            offset += self._spaces[self._find(i)].size

    def groups(self) -> list[Group]:
        """The groups, each with members in model order, ordered by their first member."""
        seen: dict[tuple[str, str, int], int] = {}
        for i, m in self._members:  # one axis of one layer is one set of channels
            key = (m.layer, m.role, m.offset)
            if key in seen:
                self._union(seen[key], i, "the same layer used twice")
            else:
                seen[key] = i
        by_root: dict[int, set[Member]] = {}
        for i, m in self._members:
            by_root.setdefault(self._find(i), set()).add(m)
        rank = self._order

        def key(m: Member) -> tuple:
            return (rank.get(m.layer, len(rank)), m.layer, ROLES.index(m.role), m.offset)

        out = []
        for root, members in by_root.items():
            s = self._spaces[root]
            ordered = tuple(sorted(members, key=key))
            out.append(Group(s.size, ordered, s.reason, tuple(s.via)))
        return sorted(out, key=lambda g: key(g.members[0]))


def _refuse(layer: str, why: str, hint: Optional[str] = None) -> LwdslError:
    return LwdslError(
        f"cannot remove filters of layer '{layer}': {why}",
        hint=hint
        or f"use remove=false (filters are zeroed, the shape stays), or leave the layer out of the selector (`except {layer}`)",
    )


def select_groups(groups: Sequence[Group], selected: Iterable[str]) -> list[Group]:
    """The groups a selection of layers prunes: those whose producers are all selected.

    Raises:
        LwdslError: a selected layer that produces no channels lwdsl can follow, a group that
            cannot be pruned (with its reason), or a group only some of whose producers are
            selected (naming the others and what couples them).
    """
    selected = list(selected)
    chosen, known = [], set()
    wanted = set(selected)
    for g in groups:
        hit = [p for p in g.producers if p in wanted]
        known.update(g.producers)
        known.update(m.layer for m in g.members if m.role == "depthwise")  # follows its group
        if not hit:
            continue
        if g.reason:
            raise _refuse(hit[0], g.reason)
        missing = [p for p in g.producers if p not in wanted]
        if missing:
            via = " and ".join(g.via) or "the graph"
            raise _refuse(
                hit[0],
                f"its channels are tied to those of {', '.join(repr(m) for m in missing)} by {via}, "
                "and those layers are not selected",
                hint="select all the layers of the group (e.g. `on conv`), or none of them",
            )
        chosen.append(g)
    for layer in selected:
        if layer not in known:
            raise _refuse(layer, "only plain (ungrouped) convolutions and linear layers found in the traced graph have removable filters")
    return chosen


def group_scores(group: Group, weight: Callable[[str], np.ndarray], p: float) -> np.ndarray:
    """Channel scores of ``group``: ``(sum over out members of sum |W[i]|^p)^(1/p)``, float64,
    the members summed in the order of their names (so no backend's layer order changes a bit).

    ``weight(layer)`` gives the canonical weight (outputs on axis 0)."""
    total = np.zeros(group.channels, dtype=np.float64)
    for m in sorted((m for m in group.members if m.role == "out"), key=lambda m: (m.layer, m.offset)):
        w = np.asarray(weight(m.layer), dtype=np.float64)
        rows = w.reshape(w.shape[0], -1)[m.positions(np.arange(group.channels))]
        total = total + np.sum(np.abs(rows) ** p, axis=1)
    return total ** (1.0 / p)


def group_keep(group: Group, weight: Callable[[str], np.ndarray], amount: float, method: str, p: float = 1.0, seed: int = 0) -> np.ndarray:
    """The keep vector (bool per channel) of ``group``: the ``round_half_even(amount *
    channels)`` lowest scores pruned, ties lower index first; ``random`` draws PCG64(seed)
    scores as :func:`lwdsl.semantics.masks.structured_keep` does.

    Raises:
        LwdslError: AMOUNT would remove every channel of the group.
    """
    if method == "random":
        scores = M.random_scores([group.channels], seed)[0]
    else:
        scores = group_scores(group, weight, p)
    keep = M.prune_lowest(scores, M.count_to_prune(amount, group.channels))
    if not keep.any():
        raise _refuse(group.name, f"AMOUNT removes all {group.channels} of its filters", hint="prune a smaller fraction")
    return keep


def axis_keeps(groups: Sequence[Group], keeps: Sequence[np.ndarray], sizes: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], np.ndarray]:
    """Kept indices per (layer, canonical axis) once every group in ``groups`` lost what its
    keep vector marks False; ``sizes`` gives each axis's length (in columns for ``in``)."""
    kept: dict[tuple[str, int], np.ndarray] = {}
    for g, keep in zip(groups, keeps):
        gone = np.flatnonzero(~np.asarray(keep, dtype=bool))
        for m in g.members:
            axis = AXIS[m.role]
            key = (m.layer, axis)
            if key not in kept:
                kept[key] = np.ones(sizes[key], dtype=bool)
            kept[key][m.positions(gone)] = False
    return {k: np.flatnonzero(v) for k, v in kept.items()}


def describe(groups: Sequence[Group]) -> list[str]:
    """One line per group, for ``explain`` and the step's notes."""
    lines = []
    for g in groups:
        roles: dict[str, list[str]] = {}
        for m in g.members:
            roles.setdefault(m.role, []).append(m.layer)
        parts = "; ".join(f"{r} {', '.join(dict.fromkeys(ls))}" for r, ls in roles.items())
        state = f"not prunable: {g.reason}" if g.reason else "prunable"
        via = f" via {', '.join(g.via)}" if g.via else ""
        lines.append(f"{g.name} ({g.channels} channels{via}, {state}): {parts}")
    return lines
