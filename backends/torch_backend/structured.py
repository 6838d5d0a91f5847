"""Physical removal of pruned filters (``prune ... structured=filters remove=true``).

A removed filter takes its whole output channel with it: its weights, its bias, the matching
entries of any BatchNorm on the way, and the input slice of every layer that consumes the
channel (conv -> conv, conv -> bn -> conv, conv -> pool/relu -> flatten -> linear, where each
channel is a block of H*W flattened columns, linear -> linear). The smaller model computes
exactly what the masked model computes when those channels output zero (weights, bias and
BatchNorm scale/shift zeroed): see docs/semantics.md.

Consumers are found by tracing the model with ``torch.fx`` and following the channel through
operations that map zero to zero and keep channels apart (ReLU-like activations, dropout,
pooling, flatten). Anything else stops the removal with an error naming the layer and the
operation: a residual ``add`` (the channel must match the other branch), a concatenation, the
model's output (the classifier's outputs are its classes), a LayerNorm (mixes channels).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from math import prod
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from lwdsl.errors import LwdslError

from .handle import TorchModel

__all__ = ["slice_layer", "Removal", "plan_removal", "remove_filters"]

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


def slice_layer(m: nn.Module, dim: int, index: torch.Tensor) -> None:
    """Keep only the entries ``index`` of a layer's output (dim 0) or input (dim 1), in place.

    Works on Conv*/Linear (weight, bias, in/out sizes) and BatchNorm (dim 0: every
    per-channel parameter and running statistic)."""
    with torch.no_grad():
        for pname in ("weight", "bias"):
            p = m._parameters.get(pname)
            if p is not None and (dim == 0 or p.dim() > 1):
                setattr(m, pname, nn.Parameter(p.index_select(dim, index).clone(), requires_grad=p.requires_grad))
        if isinstance(m, nn.modules.batchnorm._NormBase):
            for bname in ("running_mean", "running_var"):
                if getattr(m, bname, None) is not None:
                    setattr(m, bname, getattr(m, bname).index_select(0, index).clone())
            m.num_features = index.numel()
            return
    n = index.numel()
    if isinstance(m, nn.Linear):
        if dim == 0:
            m.out_features = n
        else:
            m.in_features = n
    elif isinstance(m, nn.modules.conv._ConvNd):
        if dim == 0:
            m.out_channels = n
        else:
            m.in_channels = n


@dataclass
class Removal:
    """What removing filters of ``layer`` touches: BatchNorms to shrink, and consumers with the
    number of input columns each channel spans there (1, or H*W after a flatten)."""

    layer: str
    norms: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)


def _refuse(layer: str, why: str) -> LwdslError:
    return LwdslError(
        f"cannot remove filters of layer '{layer}': {why}",
        hint="use remove=false (filters are zeroed, the shape stays) or select only layers whose output "
        "feeds convolutions or linear layers (e.g. except the last layer, or on glob \"layer*.conv1\" for ResNets)",
    )


def _trace(handle: TorchModel) -> fx.GraphModule:
    try:
        gm = fx.symbolic_trace(handle.module)
    except Exception as exc:  # fx raises many types for untraceable code
        raise LwdslError(f"remove=true needs a model torch.fx can trace; {handle.ref} is not ({exc})") from None
    was_training = handle.module.training
    gm.eval()
    ShapeProp(gm).propagate(torch.zeros(1, *handle.input_shape))
    gm.train(was_training)
    return gm


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _flatten_block(node: fx.Node, src: fx.Node) -> int | None:
    """H*W if ``node`` flattens (N, C, *S) to (N, C*prod(S)); None if it reshapes otherwise."""
    before, after = _shape(src), _shape(node)
    if len(after) == 2 and after[0] == before[0] and after[1] == prod(before[1:]):
        return prod(before[2:])
    return None


def _is_reshape(node: fx.Node, mod: nn.Module | None) -> bool:
    if node.op == "call_function":
        return node.target is torch.flatten
    if node.op == "call_method":
        return node.target in _RESHAPE_METHODS
    return isinstance(mod, nn.Flatten)


def _walk(gm: fx.GraphModule, layer: str, start: fx.Node) -> Removal:
    modules = dict(gm.named_modules())
    plan = Removal(layer)
    todo = [(start, 1)]  # (node carrying the channel on dim 1, columns per channel)
    seen = set()
    while todo:
        node, block = todo.pop()
        for user in node.users:
            if user in seen:
                continue
            seen.add(user)
            op, target = user.op, user.target
            mod = modules.get(target) if op == "call_module" else None
            if op == "call_method" and target in _SHAPE_METHODS:
                continue
            if op == "output":
                raise _refuse(layer, "it produces the model's output (the classifier's outputs are the classes)")
            if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
                if isinstance(mod, nn.modules.conv._ConvNd) and (block != 1 or mod.groups != 1):
                    raise _refuse(layer, f"it feeds '{target}', a grouped convolution or after a flatten")
                if isinstance(mod, nn.Linear) and len(_shape(node)) != 2:
                    raise _refuse(layer, f"it feeds '{target}' without a flatten (linear on the last axis)")
                plan.consumers.append((target, block))
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm) and block == 1:
                plan.norms.append(target)
                todo.append((user, block))
            elif isinstance(mod, _PASS_MODULES) or (op == "call_function" and target in _PASS_FUNCTIONS) or (
                op == "call_method" and target in _PASS_METHODS
            ):
                todo.append((user, block))
            elif _is_reshape(user, mod) and block == 1 and (flat := _flatten_block(user, node)) is not None:
                todo.append((user, flat))
            else:
                what = "an addition (a residual connection)" if target in (operator.add, torch.add, "add") else (
                    f"'{target}'" if op == "call_module" else f"{getattr(target, '__name__', target)}"
                )
                raise _refuse(layer, f"its output feeds {what}, which needs all its channels")
    return plan


def plan_removal(handle: TorchModel, layers: Sequence[str]) -> dict[str, Removal]:
    """Check every selected layer can lose filters and find what else shrinks with it.

    Raises:
        LwdslError: naming the first layer that cannot (output layer, residual add, ...).
    """
    gm = _trace(handle)
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    plans = {}
    for layer in layers:
        m = handle.module.get_submodule(layer)
        if not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or getattr(m, "groups", 1) != 1:
            raise _refuse(layer, "only plain (ungrouped) convolutions and linear layers have removable filters")
        if len(calls.get(layer, [])) != 1:
            raise _refuse(layer, f"the layer is called {len(calls.get(layer, []))} times in the forward pass")
        plans[layer] = _walk(gm, layer, calls[layer][0])
    return plans


def remove_filters(handle: TorchModel, keeps: dict[str, torch.Tensor]) -> None:
    """Remove the filters ``keeps[layer]`` (bool per output) marks False, with all they feed.

    Checks everything before changing anything; masks of touched layers are sliced alike.

    Raises:
        LwdslError: a layer that cannot lose filters, or would lose all of them.
    """
    plans = plan_removal(handle, list(keeps))
    for layer, keep in keeps.items():
        if not keep.any():
            raise _refuse(layer, f"AMOUNT removes all {keep.numel()} of its filters")
    module, masks = handle.module, handle.masks
    for layer, keep in keeps.items():
        index = torch.nonzero(keep).reshape(-1)
        for name in (layer, *plans[layer].norms):
            slice_layer(module.get_submodule(name), 0, index)
        if layer in masks:
            masks[layer] = masks[layer].index_select(0, index)
        for consumer, block in plans[layer].consumers:
            columns = (index[:, None] * block + torch.arange(block)).reshape(-1)
            slice_layer(module.get_submodule(consumer), 1, columns)
            if consumer in masks:
                masks[consumer] = masks[consumer].index_select(1, columns)
