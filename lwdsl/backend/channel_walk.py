"""The channel-dependency walk, written once (docs/semantics.md, "Pruning"): a backend gives
its graph (a ``torch.fx`` trace, a Keras functional graph) as :class:`Op` s in topological
order, shapes with the channels on axis 1; :func:`walk` tells
:class:`lwdsl.semantics.groups.GraphBuilder` what each does to them, with one set of messages."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Hashable, Iterable, Mapping, Optional

from lwdsl.semantics.groups import Channels, GraphBuilder, Group

__all__ = ["KINDS", "ZERO_ACTIVATIONS", "Op", "walk"]

#: what an operation does to channels (``shape``: reads a shape or gives no tensor; ``unknown``:
#: anything else, its inputs refused, its outputs fresh)
KINDS = (
    "input", "constant", "output", "conv", "grouped_conv", "depthwise", "linear", "norm", "pass", "flatten", "join", "concat",
    "reduce", "shape", "unknown",
)  # fmt: skip
#: activations with f(0) = 0 applied per element (Keras's names): a zeroed channel stays zero
ZERO_ACTIVATIONS = {
    "linear", "relu", "relu6", "elu", "selu", "gelu", "swish", "silu", "tanh", "hard_swish", "hard_silu", "leaky_relu",
}  # fmt: skip


@dataclass(frozen=True)
class Op:
    """One operation: ``name`` the layer (a member's name), ``label`` how messages name it
    (``'layer1.norm' (LayerNorm)``, ``'add'``); ``ins``/``outs`` its values' keys (the main input
    first) and ``in_shapes``/``out_shapes`` their shapes, channels on axis 1 (None: not a
    tensor); ``width`` a convolution's or linear layer's outputs, ``groups`` a grouped one's,
    ``multiplier`` a depthwise one's (channels pass only at 1); ``via`` what a join is (``a
    residual addition``); ``channel_axis``: a concatenation is along, a norm over, a reduction
    touches the channel axis; ``activation`` the one the layer ends in (None: none)."""

    kind: str
    name: str = ""
    label: str = ""
    ins: tuple[Hashable, ...] = ()
    outs: tuple[Hashable, ...] = ()
    in_shapes: tuple[Optional[tuple], ...] = ()
    out_shapes: tuple[Optional[tuple], ...] = ()
    width: int = 0
    groups: int = 1
    multiplier: int = 1
    via: str = ""
    channel_axis: bool = True
    activation: Optional[str] = None


def walk(ops: Iterable[Op], order: Mapping[str, int]) -> list[Group]:
    """The dependency groups of the graph ``ops``; ``order`` ranks layer names in model order."""
    return _Walk(order).run(ops)


class _Walk:
    def __init__(self, order: Mapping[str, int]) -> None:
        self.b = GraphBuilder(order)
        self.env: dict[Any, Channels] = {}

    def run(self, ops: Iterable[Op]) -> list[Group]:
        for op in ops:
            if op.kind not in KINDS:
                raise ValueError(f"kind {op.kind!r} not in {KINDS}")
            try:
                self.step(op)
            except KeyError:  # reads an input that carries no channels
                self.unknown(op)
        return self.b.groups()

    def fresh(self, op: Op, reason: str) -> None:
        for key, shape in zip(op.outs, op.out_shapes):
            if shape is not None and len(shape) >= 2:
                self.env[key] = self.b.space(shape[1], reason)

    def refuse_inputs(self, op: Op, reason: str) -> None:
        for key in op.ins:
            if key in self.env:
                self.b.refuse(self.env[key], reason)

    def unknown(self, op: Op, why: Optional[str] = None) -> None:
        self.refuse_inputs(op, why or f"its channels reach {op.label}, which needs all its channels")
        self.fresh(op, f"they come out of {op.label}, which lwdsl cannot follow")

    def step(self, op: Op) -> None:
        kind, env = op.kind, self.env
        # an input with a channel axis the walk did not follow: made by an operation the graph does not list
        unfollowed = any(k not in env for k, s in zip(op.ins, op.in_shapes) if s is not None and len(s) >= 2)
        if kind == "output":
            self.refuse_inputs(op, "it produces the model's outputs (a classifier's outputs are its classes)")
        elif kind in ("input", "constant"):
            self.fresh(op, "they are the model's input" if kind == "input" else "they meet a constant tensor of the model")
        elif kind == "unknown" or kind != "shape" and unfollowed:
            self.unknown(op)
        elif kind == "join":
            shape = op.out_shapes[0]
            same = [k for k, s in zip(op.ins, op.in_shapes) if k in env and len(s) == len(shape) and s[1:2] == shape[1:2]]
            if not same:
                self.unknown(op)
                return
            for key in same[1:]:
                self.b.same(env[same[0]], env[key], op.via)
            env[op.outs[0]] = env[same[0]]
        elif kind == "concat" and op.channel_axis:
            env[op.outs[0]] = self.b.concat([env[k] for k in op.ins])
        elif kind != "shape":
            self.channels(op, env[op.ins[0]])

    def channels(self, op: Op, ch: Channels) -> None:
        """The rules of an operation that reads the channels ``ch`` of its one (first) input."""
        b, env, kind, name, out = self.b, self.env, op.kind, op.name, op.outs[0]
        before, after = op.in_shapes[0], op.out_shapes[0]
        act, mixes = op.activation, None
        if act is not None and act not in ZERO_ACTIVATIONS:
            mixes = f"'{name}' ends in activation '{act}', which does not keep 0 at 0"
        if kind == "grouped_conv" or kind == "conv" and ch.block != 1:  # (after a flatten: no plain channels)
            why = f"'{name}' is a grouped convolution ({op.groups} groups), whose channels lwdsl does not remove"
            self.refuse_inputs(op, f"its channels reach {why}")
            env[out] = b.space(op.width, why)
            b.member(env[out], name, "out")
        elif kind in ("depthwise", "pass") and mixes:
            self.unknown(op, f"its channels reach {mixes}")
        elif kind == "linear" and len(before) != 2:
            self.unknown(op, f"its channels reach '{name}', a linear layer on the last axis of a feature map (no flatten)")
        elif kind in ("conv", "linear"):
            b.member(ch, name, "in")
            env[out] = b.space(op.width, mixes)
            b.member(env[out], name, "out")
        elif ch.block == 1 and (kind == "depthwise" and op.multiplier == 1 or kind == "norm" and op.channel_axis):
            b.member(ch, name, kind)
            env[out] = ch
        elif kind == "pass" or kind == "flatten" and after == before:
            env[out] = ch
        elif kind == "reduce" and not op.channel_axis and ch.block == 1:  # over spatial axes only
            env[out] = ch
        elif kind == "flatten" and len(before) >= 2 and after == (before[0], prod(before[1:])):
            env[out] = Channels(ch.ids, ch.block * prod(before[2:]))
        elif kind == "flatten":
            self.unknown(op, f"its channels reach a reshape {before} -> {after} that mixes them")
        elif kind == "concat":  # along another axis
            for key in op.ins[1:]:
                b.same(ch, env[key], "a concatenation along another axis")
            env[out] = ch
        else:
            self.unknown(op)
