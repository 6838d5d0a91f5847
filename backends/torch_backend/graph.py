"""Dependency groups of a PyTorch model: its ``torch.fx`` trace (a model fx cannot trace is
refused with fx's message) as the ops of the core's channel walk
(:mod:`lwdsl.backend.channel_walk`, channels on dim 1): which modules and functions are which."""

from __future__ import annotations

import operator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from lwdsl.errors import LwdslError
from lwdsl.backend.channel_walk import Op, walk
from lwdsl.semantics.groups import Group

from .handle import TorchModel
from .layers import weighted_layers

__all__ = ["trace", "find_groups"]

# what passes channels through unchanged, or reads only the shape
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


def _op(node: fx.Node, modules: dict[str, nn.Module]) -> Op:
    """``node`` as the core's walk sees it (channels on dim 1: the canonical layout already)."""
    op, target, args = node.op, node.target, node.args
    ins: list[fx.Node] = []
    fx.node.map_arg((args, node.kwargs), lambda n: ins.append(n) or n)
    m = modules.get(target) if op == "call_module" else None
    label = f"'{target}' ({type(m).__name__})" if m is not None else f"'{getattr(target, '__name__', target)}'"
    base = dict(name=str(target), label=label, ins=tuple(ins), outs=(node,))
    base.update(in_shapes=tuple(_shape(n) for n in ins), out_shapes=(_shape(node),))
    src = args[0] if args and isinstance(args[0], fx.Node) else None  # what a one-input rule reads
    if op in ("placeholder", "get_attr", "output"):
        return Op({"placeholder": "input", "get_attr": "constant", "output": "output"}[op], **base)
    if op == "call_method" and target in _SHAPE_METHODS or _shape(node) is None and op != "call_module":
        return Op("shape", **base)  # reads a shape, or gives no tensor
    if target in _JOIN and op != "call_module":
        return Op("join", via=_JOIN[target], **base)
    if target in _CAT:
        dim = args[1] if len(args) > 1 else node.kwargs.get("dim", 0)
        return Op("concat", channel_axis=dim % len(_shape(node)) == 1, **base)
    if src is None:
        return Op("unknown", **base)
    if op == "call_module":
        return Op(**_module_kind(m), **base)
    if (op == "call_function" and target in _PASS_FUNCTIONS) or (op == "call_method" and target in _PASS_METHODS):
        return Op("pass", **base)
    if (op == "call_function" and target is torch.flatten) or (op == "call_method" and target in _RESHAPE_METHODS):
        return Op("flatten", **base)
    if target in _REDUCE and _shape(src) is not None:
        dims = args[1] if len(args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        return Op("reduce", channel_axis=not (dims and all(d % len(_shape(src)) >= 2 for d in dims)), **base)
    return Op("unknown", **base)


def _module_kind(m: nn.Module) -> dict[str, Any]:
    """What a call of ``m`` is to the walk: its kind (and width, groups)."""
    if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
        if m.groups == 1:
            return dict(kind="conv", width=m.out_channels)
        if m.groups == m.in_channels == m.out_channels:
            return dict(kind="depthwise")
        return dict(kind="grouped_conv", width=m.out_channels, groups=m.groups)
    if isinstance(m, nn.Linear):
        return dict(kind="linear", width=m.out_features)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return dict(kind="norm")
    if isinstance(m, _PASS_MODULES):
        return dict(kind="pass")
    return dict(kind="flatten" if isinstance(m, nn.Flatten) else "unknown")


def find_groups(handle: TorchModel, gm: Optional[fx.GraphModule] = None) -> list[Group]:
    """The dependency groups of ``handle``'s model (see :mod:`lwdsl.semantics.groups`)."""
    gm = gm if gm is not None else trace(handle)
    order = {name: i for i, (name, _) in enumerate(weighted_layers(handle.module))}
    modules = dict(gm.named_modules())
    return walk((_op(node, modules) for node in gm.graph.nodes), order)
