"""Dependency groups of a PyTorch model: walks a ``torch.fx`` trace in order and tells
:class:`lwdsl.semantics.groups.GraphBuilder` what each node does to the channel axis (dim 1);
the rules are docs/semantics.md's ("Pruning"); a model fx cannot trace is refused with fx's
message."""

from __future__ import annotations

import operator
from math import prod
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from lwdsl.errors import LwdslError
from lwdsl.semantics.groups import Channels, GraphBuilder, Group

from .handle import TorchModel
from .layers import weighted_layers

__all__ = ["trace", "find_groups"]

# what the walk passes channels through unchanged, or reads only the shape of
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardswish, nn.Hardtanh,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_PASS_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardtanh, torch.tanh,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d,
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
}  # fmt: skip
_PASS_METHODS = {"relu", "relu_", "tanh", "contiguous"}
_SHAPE_METHODS = {"size", "dim"}  # read the shape only: no data flows on
_RESHAPE_METHODS = {"flatten", "view", "reshape"}

_JOIN = {
    operator.add: "a residual addition", torch.add: "a residual addition", "add": "a residual addition",
    operator.iadd: "a residual addition", "add_": "a residual addition",
    operator.sub: "a subtraction", torch.sub: "a subtraction", "sub": "a subtraction",
    operator.mul: "a multiplication", torch.mul: "a multiplication", "mul": "a multiplication", operator.imul: "a multiplication",
    operator.truediv: "a division", torch.div: "a division", "div": "a division",
}  # fmt: skip
_CAT = {torch.cat, torch.concat}
_REDUCE = {torch.mean, "mean", torch.amax, "amax", torch.sum, "sum"}


def trace(handle: TorchModel) -> fx.GraphModule:
    """``handle``'s module traced by torch.fx, with shapes from one zero input.

    Raises:
        LwdslError: the model cannot be traced (naming fx's reason).
    """
    try:
        gm = fx.symbolic_trace(handle.module)
    except Exception as exc:  # fx raises many types for untraceable code
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LwdslError(
            f"remove=true needs a model torch.fx can trace; {handle.ref} is not ({type(exc).__name__}: {first})",
            hint="move data-dependent control flow out of forward(), or prune with remove=false",
        ) from None
    was_training = handle.module.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *handle.input_shape))
    finally:
        gm.train(was_training)
    return gm


def _shape(node: Any) -> Optional[tuple[int, ...]]:
    meta = getattr(node, "meta", {}).get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _name(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"'{node.target}'"
    return f"'{getattr(node.target, '__name__', node.target)}'"


class _Walk:
    def __init__(self, gm: fx.GraphModule, order: dict[str, int]) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.b = GraphBuilder(order)
        self.env: dict[fx.Node, Channels] = {}

    def fresh(self, node: fx.Node, reason: Optional[str]) -> None:
        shape = _shape(node)
        if shape is not None and len(shape) >= 2:
            self.env[node] = self.b.space(shape[1], reason)

    def inputs(self, node: fx.Node) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
        return [n for n in found if n in self.env]

    def unknown(self, node: fx.Node, why: Optional[str] = None) -> None:
        reason = why or f"its channels reach {_name(node)}, which needs all its channels"
        for n in self.inputs(node):
            self.b.refuse(self.env[n], reason)
        self.fresh(node, f"they come out of {_name(node)}, which lwdsl cannot follow")

    def run(self) -> list[Group]:
        for node in self.gm.graph.nodes:
            try:
                self.step(node)
            except KeyError:  # an input lwdsl could not follow
                self.unknown(node)
        return self.b.groups()

    def step(self, node: fx.Node) -> None:
        op, target = node.op, node.target
        b, env = self.b, self.env
        if op == "placeholder":
            self.fresh(node, "they are the model's input")
            return
        if op == "get_attr":
            self.fresh(node, "they meet a constant tensor of the model")
            return
        if op == "output":
            for n in self.inputs(node):
                b.refuse(env[n], "it produces the model's outputs (a classifier's outputs are its classes)")
            return
        args = node.args
        src = args[0] if args and isinstance(args[0], fx.Node) else None
        if op == "call_method" and target in _SHAPE_METHODS or _shape(node) is None and op != "call_module":
            return  # reads a shape, or gives no tensor
        if op == "call_module":
            self.module(node, self.modules[target], src)
            return
        if (op == "call_function" and target in _PASS_FUNCTIONS) or (op == "call_method" and target in _PASS_METHODS):
            env[node] = env[src]
        elif target in _JOIN:
            shape = _shape(node)
            ins = [n for n in self.inputs(node) if (_shape(n) or ())[1:2] == shape[1:2] and len(_shape(n)) == len(shape)]
            if not ins:
                self.unknown(node)
                return
            env[node] = env[ins[0]]
            for n in ins[1:]:
                b.same(env[ins[0]], env[n], _JOIN[target])
        elif target in _CAT:
            parts = args[0]
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim", 0)
            ndim = len(_shape(node))
            if dim % ndim == 1:
                env[node] = b.concat([env[p] for p in parts])
            else:
                env[node] = env[parts[0]]
                for p in parts[1:]:
                    b.same(env[parts[0]], env[p], "a concatenation along another axis")
        elif (op == "call_function" and target is torch.flatten) or (op == "call_method" and target in _RESHAPE_METHODS):
            self.reshape(node, src)
        elif target in _REDUCE:
            dims = args[1] if len(args) > 1 else node.kwargs.get("dim")
            dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
            ndim = len(_shape(src))
            if dims and all(d % ndim >= 2 for d in dims) and env[src].block == 1:
                env[node] = env[src]
            else:
                self.unknown(node)
        else:
            self.unknown(node)

    def reshape(self, node: fx.Node, src: fx.Node) -> None:
        before, after = _shape(src), _shape(node)
        ch = self.env[src]
        if after == before:
            self.env[node] = ch
        elif len(before) >= 2 and len(after) == 2 and after[0] == before[0] and after[1] == prod(before[1:]):
            self.env[node] = Channels(ch.ids, ch.block * prod(before[2:]))
        else:
            self.unknown(node, f"its channels reach a reshape {before} -> {after} that mixes them")

    def module(self, node: fx.Node, m: nn.Module, src: Optional[fx.Node]) -> None:
        b, env, name = self.b, self.env, str(node.target)
        ch = env[src] if src is not None else None
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed and ch is not None:
            if m.groups == 1 and ch.block == 1:
                b.member(ch, name, "in")
                env[node] = b.space(m.out_channels)
                b.member(env[node], name, "out")
            elif m.groups == m.in_channels == m.out_channels and ch.block == 1:
                b.member(ch, name, "depthwise")
                env[node] = ch
            else:
                why = f"{name!r} is a grouped convolution ({m.groups} groups), whose channels lwdsl does not remove"
                self.unknown(node, f"its channels reach {why}")
                env[node] = b.space(m.out_channels, why)
                b.member(env[node], name, "out")
        elif isinstance(m, nn.Linear) and ch is not None:
            if len(_shape(src)) != 2:
                self.unknown(node, f"its channels reach {name!r}, a linear layer on the last axis (no flatten)")
                return
            b.member(ch, name, "in")
            env[node] = b.space(m.out_features)
            b.member(env[node], name, "out")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and ch is not None and ch.block == 1:
            b.member(ch, name, "norm")
            env[node] = ch
        elif isinstance(m, _PASS_MODULES) and ch is not None:
            env[node] = ch
        elif isinstance(m, nn.Flatten) and ch is not None:
            self.reshape(node, src)
        else:
            self.unknown(node, f"its channels reach {name!r} ({type(m).__name__}), which needs all its channels")


def find_groups(handle: TorchModel, gm: Optional[fx.GraphModule] = None) -> list[Group]:
    """The dependency groups of ``handle``'s model (see :mod:`lwdsl.semantics.groups`)."""
    gm = gm if gm is not None else trace(handle)
    order = {name: i for i, (name, _) in enumerate(weighted_layers(handle.module))}
    return _Walk(gm, order).run()
