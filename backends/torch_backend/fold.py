"""Fold each batch norm into the conv/linear layer before it, ahead of quantization: the flow is
the core's (:mod:`lwdsl.backend.fold`, :mod:`lwdsl.semantics.fold`); here the pairs from a
``torch.fx`` trace, and the norm becomes ``nn.Identity`` (docs/semantics.md, "Quantization:
batch-norm folding, artifacts, latency")."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lwdsl.backend import StepContext
from lwdsl.backend import fold as flow
from lwdsl.semantics.fold import fold_batchnorm

from .handle import TorchModel

__all__ = ["fold_batchnorms", "drop_folded"]

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _pairs(module: nn.Module) -> list[tuple[str, str, str]]:
    """(layer, norm, why-not or "") for every norm module whose input is a conv/linear module's output."""
    import torch.fx

    if not any(isinstance(m, _NORMS) for m in module.modules()):
        return []  # nothing to trace for
    graph = torch.fx.symbolic_trace(module).graph
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    mods = dict(module.named_modules())
    found = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _NORMS):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or not isinstance(mods.get(src.target), _LAYERS):
            continue
        why = ""
        if mods[node.target].running_mean is None:
            why = "has no running statistics"
        elif len(src.users) != 1 or calls[src.target] != 1 or calls[node.target] != 1:
            why = f"'{src.target}' output also feeds other ops"
        found.append((str(src.target), str(node.target), why))
    return found


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _drop(module: nn.Module, todo: dict[str, str]) -> None:
    """Each norm of ``todo`` (layer -> norm) becomes ``nn.Identity``; a layer without a bias gets one (zeros)."""
    for layer, norm in todo.items():
        lin = module.get_submodule(layer)
        if lin.bias is None:
            lin.bias = nn.Parameter(torch.zeros(lin.weight.shape[0], dtype=lin.weight.dtype))
        _set_module(module, norm, nn.Identity())


def drop_folded(module: nn.Module, norms: Sequence[str]) -> dict[str, str]:
    """Make ``module`` the shape of a folded model: each of ``norms`` becomes ``nn.Identity`` and
    the layer before it gets a bias (zeros until a state is loaded). For loading a state saved
    after :func:`fold_batchnorms` (its ``<norm>.folded`` markers) into a freshly built model.
    Returns layer -> norm.

    Raises:
        LwdslError: a named norm is not in the model or follows no conv/linear layer.
    """
    todo = flow.folded_pairs(_pairs(module), norms, "linear")
    _drop(module, todo)
    return todo


def fold_batchnorms(handle: TorchModel, layers: Sequence[str], ctx: StepContext) -> dict[str, str]:
    """Fold the norms after ``layers`` into them (the core's :func:`lwdsl.backend.fold.foldable`
    pairs, :func:`lwdsl.semantics.fold.fold_batchnorm`'s numbers); returns layer -> norm folded."""
    module = handle.module
    todo = flow.foldable(lambda: _pairs(module), layers, ctx)
    folded = {}
    for layer, norm in todo.items():
        if layer in handle.masks:
            with handle.masks.unpacked():
                handle.apply_mask(layer)
        lin, bn = module.get_submodule(layer), module.get_submodule(norm)
        t = lambda p: None if p is None else p.detach().to(torch.float32).numpy()  # noqa: E731
        folded[layer] = fold_batchnorm(t(lin.weight), t(lin.bias), t(bn.weight), t(bn.bias), t(bn.running_mean),
                                       t(bn.running_var), bn.eps)
    _drop(module, todo)
    with torch.no_grad():
        for layer, (wf, bf) in folded.items():
            module.get_submodule(layer).weight.copy_(torch.from_numpy(wf))
            module.get_submodule(layer).bias.copy_(torch.from_numpy(bf))
    return flow.record_folded(handle, todo, ctx)
